"""PostgreSQL backend: production. Event segments are partitioned by month; old months are dropped whole.

Longer than 400 lines because the schema's whole history (``MIGRATIONS``, ~250 lines of SQL that
must stay in order and unchanged once released) sits beside the dialect it is written in.
"""

from __future__ import annotations

import calendar
import logging
import re
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from hub.storage.buckets import PostgresBucketSql
from hub.storage.cubelevels import POSTGRES_MONTH_OF, backfill_sql
from hub.storage.live import EventNotifySql
from hub.storage.pooler import POOLERS, begin_statement, split_options
from hub.storage.rollup import RollupRow
from hub.storage.sql import SqlStore
from hub.storage.sqlite import Migration
from vigie.exceptions import VigieError

__all__ = ["MIGRATIONS", "PostgresStore", "StoreUnavailableError", "astuple_rollup", "month_bounds", "redact"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")
#: The server's warning when a commit stopped waiting for its synchronous standby (a cancel): the
#: transaction is committed on the primary alone, so a failover now could lose it.
_SYNC_WAIT_CANCELLED = "synchronous replication"


class StoreUnavailableError(VigieError):
    """The database connection failed: what was being written is not known to be stored; retry."""


#: How long the compaction waits for older transactions to end before it vacuums the hot table.
VACUUM_WAIT_S = 5.0


def redact(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    params.pop("password", None)
    return make_conninfo("", **params)


MIGRATIONS: list[tuple[int, list[Migration]]] = [
    (1, [
        """CREATE TABLE events (
            seq BIGSERIAL,
            id TEXT NOT NULL,
            site TEXT NOT NULL, device TEXT NOT NULL, kind TEXT NOT NULL, place TEXT NOT NULL,
            window_start BIGINT NOT NULL, window_s INTEGER NOT NULL,
            body TEXT NOT NULL, received_at DOUBLE PRECISION NOT NULL,
            -- The id encodes the window start, so (id, window_start) is as unique as id alone;
            -- a partitioned table's keys must contain the partition column.
            PRIMARY KEY (id, window_start)
        ) PARTITION BY RANGE (window_start)""",
        "CREATE INDEX events_seq ON events (seq)",
        "CREATE INDEX events_device ON events (site, device, window_start)",
        """CREATE TABLE devices (
            site TEXT NOT NULL, device TEXT NOT NULL,
            first_seen DOUBLE PRECISION NOT NULL, last_seen DOUBLE PRECISION NOT NULL,
            status TEXT, status_ts BIGINT, heartbeat TEXT,
            events BIGINT NOT NULL DEFAULT 0, quarantined BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (site, device))""",
        """CREATE TABLE quarantine (
            seq BIGSERIAL PRIMARY KEY, received_at DOUBLE PRECISION NOT NULL, topic TEXT NOT NULL,
            site TEXT, device TEXT, field TEXT NOT NULL, reason TEXT NOT NULL,
            size INTEGER NOT NULL, payload BYTEA NOT NULL)""",
    ]),
    (2, [
        """CREATE TABLE rollups (
            hour BIGINT NOT NULL, site TEXT NOT NULL, device TEXT NOT NULL, place TEXT NOT NULL,
            metric TEXT NOT NULL, n BIGINT NOT NULL, total DOUBLE PRECISION NOT NULL,
            max DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (hour, site, device, place, metric))""",
        "CREATE INDEX rollups_place ON rollups (site, place, hour)",
        """CREATE TABLE purges (
            ran_at DOUBLE PRECISION NOT NULL, events BIGINT NOT NULL, rollups BIGINT NOT NULL,
            quarantine BIGINT NOT NULL, policy TEXT NOT NULL)""",
        "CREATE INDEX quarantine_received ON quarantine (received_at)",
    ]),
    (3, [
        """CREATE TABLE ingest_workers (
            worker TEXT PRIMARY KEY, updated_at DOUBLE PRECISION NOT NULL, connected BOOLEAN NOT NULL,
            stats TEXT NOT NULL)""",
    ]),
    (4, [
        # Enrolment (hub/enrolment.py): one-time tokens, stored as SHA-256 hashes only.
        """CREATE TABLE enrol_tokens (
            token_hash TEXT PRIMARY KEY, site TEXT NOT NULL, profile TEXT NOT NULL, device TEXT,
            created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL,
            used_at DOUBLE PRECISION, used_by TEXT)""",
        """CREATE TABLE enrolments (
            site TEXT NOT NULL, device TEXT NOT NULL, profile TEXT NOT NULL,
            serial TEXT NOT NULL, fingerprint TEXT NOT NULL, not_after DOUBLE PRECISION NOT NULL,
            enrolled_at DOUBLE PRECISION NOT NULL, revoked_at DOUBLE PRECISION,
            PRIMARY KEY (site, device))""",
        # Every revoked serial stays here (the CRL), even after the device is enrolled again.
        """CREATE TABLE revoked_certs (
            serial TEXT PRIMARY KEY, site TEXT NOT NULL, device TEXT NOT NULL,
            revoked_at DOUBLE PRECISION NOT NULL)""",
    ]),
    (5, [
        # City data fusion (hub/fusion): zone × hour × source × category counts.
        """CREATE TABLE cube (
            zone TEXT NOT NULL, hour BIGINT NOT NULL, source TEXT NOT NULL, category TEXT NOT NULL,
            n DOUBLE PRECISION NOT NULL, span_h INTEGER NOT NULL DEFAULT 1,
            PRIMARY KEY (zone, hour, source, category))""",
        "CREATE INDEX cube_hour ON cube (hour)",
        # One row per imported file: importing the same file twice adds nothing.
        """CREATE TABLE imports (
            source TEXT NOT NULL, sha256 TEXT NOT NULL, file TEXT NOT NULL,
            imported_at DOUBLE PRECISION NOT NULL,
            report TEXT NOT NULL, PRIMARY KEY (source, sha256))""",
        """CREATE TABLE model_state (
            name TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL)""",
        """CREATE TABLE anomalies (
            zone TEXT NOT NULL, hour BIGINT NOT NULL, source TEXT NOT NULL, category TEXT NOT NULL,
            observed DOUBLE PRECISION NOT NULL, expected DOUBLE PRECISION NOT NULL,
            p DOUBLE PRECISION NOT NULL, created_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (zone, hour, source, category))""",
        "CREATE INDEX anomalies_hour ON anomalies (hour)",
    ]),
    (6, [
        # Access control (hub/auth): passwords as argon2id hashes, API tokens as SHA-256 hashes.
        """CREATE TABLE users (
            username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, role TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL, disabled_at DOUBLE PRECISION)""",
        """CREATE TABLE api_tokens (
            token_hash TEXT PRIMARY KEY, username TEXT NOT NULL, label TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL,
            revoked_at DOUBLE PRECISION)""",
        # The audit log: every request, hash-chained (hub/audit.py).
        """CREATE TABLE audit (
            seq BIGSERIAL PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, username TEXT, role TEXT,
            method TEXT NOT NULL,
            path TEXT NOT NULL, params TEXT NOT NULL, purpose TEXT, status INTEGER NOT NULL,
            prev_hash TEXT NOT NULL, hash TEXT NOT NULL)""",
        "CREATE INDEX audit_ts ON audit (ts)",
        # Append-only, enforced by the database too: no UPDATE, no DELETE on the audit log.
        """CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$""",
        """CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
            FOR EACH ROW EXECUTE FUNCTION audit_append_only()""",
    ]),
    (7, [
        # OTA campaigns (hub/campaigns.py), shared by every hub host on this database.
        """CREATE TABLE campaigns (
            id TEXT PRIMARY KEY, state TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL, doc TEXT NOT NULL)""",
    ]),
    (8, [
        # Login throttling shared by every hub process (hub/storage/throttle.py, issue 17).
        """CREATE TABLE throttle (
            name TEXT PRIMARY KEY, state TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL)""",
        "CREATE INDEX throttle_expires ON throttle (expires_at)",
    ]),
    (9, [
        # Operators' tags on devices, for campaign selectors (hub/storage/tags.py).
        """CREATE TABLE device_tags (
            site TEXT NOT NULL, device TEXT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (site, device, tag))""",
    ]),
    (10, [
        # Certificate renewal (hub/cert_renewal.py): every certificate a device renewed from or to.
        # Each stays valid until it expires, so revoking the device revokes them all.
        """CREATE TABLE device_certs (
            serial TEXT PRIMARY KEY, site TEXT NOT NULL, device TEXT NOT NULL,
            issued_at DOUBLE PRECISION NOT NULL)""",
        "CREATE INDEX device_certs_device ON device_certs (site, device)",
    ]),
    (11, [
        # Compact events (issue 24, hub/storage/segments.py): a dictionary of streams, live rows,
        # and one packed segment per stream and hour, partitioned by month (old months are dropped
        # whole). The old rows are converted, then dropped.
        """CREATE TABLE event_streams (
            stream INTEGER GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, site TEXT NOT NULL,
            device TEXT NOT NULL, kind TEXT NOT NULL, place TEXT NOT NULL,
            UNIQUE (site, device, kind, place))""",
        """CREATE TABLE events_hot (
            id UUID PRIMARY KEY, stream INTEGER NOT NULL, window_start BIGINT NOT NULL,
            received_at DOUBLE PRECISION NOT NULL, part BYTEA NOT NULL)""",
        "CREATE INDEX events_hot_time ON events_hot (window_start, id)",
        "CREATE INDEX events_hot_stream ON events_hot (stream, window_start)",
        """CREATE TABLE event_segments (
            stream INTEGER NOT NULL, hour BIGINT NOT NULL, seg INTEGER NOT NULL, n INTEGER NOT NULL,
            body BYTEA NOT NULL, PRIMARY KEY (stream, hour, seg)) PARTITION BY RANGE (hour)""",
        # Already zlib-compressed: TOAST stores it out of line as it is, without pglz trying again.
        "ALTER TABLE event_segments ALTER COLUMN body SET STORAGE EXTERNAL",
        "CREATE INDEX event_segments_hour ON event_segments (hour)",
        # Hours with more than one segment of a stream: what compaction has left to do.
        "CREATE INDEX event_segments_open ON event_segments (hour) WHERE seg > 0",
        lambda store, cur: store._convert_v10_events(cur),
        "DROP TABLE events",
    ]),
    (12, [
        # The cube's day, ISO week and month-of-weeks sums (UTC), kept with the hourly rows
        # (hub/storage/cubelevels.py), filled here from the cube already stored.
        """CREATE TABLE cube_levels (
            level TEXT NOT NULL, start BIGINT NOT NULL, zone TEXT NOT NULL, source TEXT NOT NULL,
            category TEXT NOT NULL, n DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (level, start, zone, source, category))""",
        # Cube pages come in (hour, zone, source, category) order: this index walks them.
        "DROP INDEX cube_hour",
        "CREATE INDEX cube_hour ON cube (hour, zone, source, category)",
        *backfill_sql(POSTGRES_MONTH_OF),
        # Roll-ups are updated in place at every ingest batch: room on each page for the new
        # version (fillfactor) lets PostgreSQL make them HOT updates, pruned on the page without a
        # VACUUM, and the table's own autovacuum thresholds do not wait for 20 % of it to be dead.
        # Measured in docs/performance.md ("Roll-up bloat"): bench/rollup_bloat.py.
        """ALTER TABLE rollups SET (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01,
            autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.05)""",
    ]),
    (13, [
        # Rate limits shared by every hub process (hub/storage/buckets.py, issue 22). UNLOGGED: no
        # WAL, so nothing to flush or replicate; after a crash or a promote the buckets start full.
        # No index on full_at: updates stay HOT (the purge scans a table of live keys only).
        """CREATE UNLOGGED TABLE buckets (
            name TEXT PRIMARY KEY, full_at DOUBLE PRECISION NOT NULL, taken INTEGER NOT NULL)""",
    ]),
    (14, [
        # Periodic jobs run by one hub process at a time (hub/storage/leases.py, hub/jobs.py, issue 22).
        """CREATE TABLE job_leases (
            name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL,
            ran_at DOUBLE PRECISION NOT NULL, runs BIGINT NOT NULL)""",
    ]),
    (16, [
        # Issue 24: the compaction job packs the current hour every few minutes (hub/compact_job.py),
        # so an hour holds several segments per stream. ``hi`` is a segment's newest window start:
        # ingest looks for duplicates only in segments whose ``hi`` reaches the batch's windows
        # (none for live events), instead of decoding every segment of the hour. The default (the
        # largest integer: "any window of its hour") keeps older segments always looked in. Indexed
        # with the hour: one probe tells whether an hour holds a segment as new as a batch.
        "ALTER TABLE event_segments ADD COLUMN hi BIGINT NOT NULL DEFAULT 9223372036854775807",
        "DROP INDEX event_segments_hour",
        "CREATE INDEX event_segments_hour ON event_segments (hour, hi)",
    ]),
]  # fmt: skip


def astuple_rollup(r: RollupRow) -> tuple[Any, ...]:
    return (r.hour, r.site, r.device, r.place, r.metric, r.n, r.total, r.max)


_PARTITION = re.compile(r"^event_segments_y(\d{4})m(\d{2})$")


def month_bounds(ts: int) -> tuple[int, int, str]:
    """[start, end) of the UTC month holding ``ts``, and its partition's name."""
    t = time.gmtime(ts)
    start = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    end = calendar.timegm((year, month, 1, 0, 0, 0))
    return start, end, f"event_segments_y{t.tm_year:04d}m{t.tm_mon:02d}"


class PostgresStore(EventNotifySql, PostgresBucketSql, SqlStore):
    """psycopg 3, one connection per store (guarded by a lock), autocommit with explicit transactions.

    Stored events are announced with ``NOTIFY`` (``live.py``): API processes wake their live streams.
    """

    backend = "postgres"
    _greatest = "GREATEST"
    _placeholder = "%s"
    _for_update = " FOR UPDATE"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        migrations: list[tuple[int, list[Migration]]] | None = None,
        pooler: str = "none",
    ) -> None:
        super().__init__()
        self.dsn = dsn
        if schema and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise VigieError(f"schema name {schema!r} must be lower-case letters, digits and '_'")
        self.schema = schema
        if pooler not in POOLERS:
            raise VigieError(f"db_pooler {pooler!r} is not one of {', '.join(POOLERS)}")
        #: Behind PgBouncer in transaction mode (pooler.py): no session state, settings per transaction.
        self.pooler = pooler
        self._pooled = split_options(dsn) if pooler != "none" else None
        self._begin_sql: str | pgsql.Composed = "BEGIN"
        if self._pooled is not None:
            self._begin_sql = begin_statement(self._pooled, schema)
        #: Settings sent with each BEGIN (pooled): a lone statement then needs a transaction too.
        self._per_transaction = self._pooled is not None and bool(self._pooled.settings or schema)
        self._sync_cancelled = False
        self._db = self._connect()
        self._partitions: set[str] = set()
        self._partition_lock = threading.Lock()
        self._migrate(MIGRATIONS if migrations is None else migrations)

    def _connect(self) -> Any:
        """A new connection (a multi-host DSN with ``target_session_attrs`` picks the node here)."""
        try:
            if self._pooled is not None:  # no prepared statements: the next transaction is elsewhere
                db = psycopg.connect(
                    self._pooled.dsn, autocommit=True, connect_timeout=10, prepare_threshold=None
                )
            else:
                db = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise StoreUnavailableError(
                f"cannot connect to PostgreSQL at {redact(self.dsn)!r}: {exc}".strip()
            ) from None
        db.add_notice_handler(self._on_notice)
        if self.schema and self._pooled is None:  # created by _migrate (a standby cannot create it)
            db.execute(f"SET search_path TO {self.schema}")
        return db

    def _on_notice(self, diag: psycopg.errors.Diagnostic) -> None:
        if _SYNC_WAIT_CANCELLED in (diag.message_primary or ""):
            self._sync_cancelled = True

    def _reconnect_if_closed(self) -> None:
        """After a lost connection (a primary killed, a failover), connect again: the lock is held."""
        if self._db.closed:
            self._partitions.clear()  # the node may differ: ask it again which months exist
            self._db = self._connect()
            log.warning("reconnected to PostgreSQL", extra={"dsn": redact(self.dsn)})

    def _connection(self) -> Any:
        self._reconnect_if_closed()
        return self._db

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """One transaction; a lost connection is reconnected before it starts, never inside it.

        A connection lost inside the transaction raises :class:`StoreUnavailableError`: the commit may
        or may not have happened, so the caller (the ingest) must not acknowledge and must retry, which
        the idempotent insert makes safe. A commit that stopped waiting for its synchronous standby
        raises too: it is on the primary alone.
        """
        with self._lock:
            self._reconnect_if_closed()
            cur = self._db.cursor()
            try:
                cur.execute(self._begin_sql)
            except psycopg.OperationalError:
                if not self._db.closed:
                    raise
                # It died while idle (a restart, a failover): nothing was sent, so connect again.
                self._reconnect_if_closed()
                cur = self._db.cursor()
                cur.execute(self._begin_sql)
            self._sync_cancelled = False
            try:
                yield cur
                cur.execute("COMMIT")
            except psycopg.OperationalError as exc:
                self._partitions.clear()
                if not self._db.closed:  # a deadlock, a timeout: the connection lives, the write failed
                    cur.execute("ROLLBACK")
                    raise
                raise StoreUnavailableError(
                    f"PostgreSQL connection lost during a write ({exc}); not known to be stored: retry"
                ) from exc
            except BaseException:
                self._partitions.clear()  # a partition created in this transaction is rolled back
                if not self._db.closed:
                    cur.execute("ROLLBACK")
                raise
            if self._sync_cancelled:
                raise StoreUnavailableError(
                    "the commit stopped waiting for the synchronous standby: stored on the primary "
                    "only, not acknowledged; retry"
                )

    @contextmanager
    def _statements(self) -> Iterator[Any]:
        if not self._per_transaction:
            with super()._statements() as cur:
                yield cur
            return
        with self._tx() as cur:
            yield cur

    def _read(self, run: Callable[[Any], _T]) -> _T:
        """``run(cursor)``, a read; on a lost connection, connect again once and run it again (a read
        is safe to repeat). Behind a pooler, in a transaction that carries the session's settings."""
        if self._per_transaction:  # BEGIN with the settings, the read, COMMIT
            for attempt in (1, 2):
                try:
                    with self._tx() as cur:
                        return run(cur)
                except StoreUnavailableError:
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")
        with self._lock:
            for attempt in (1, 2):
                self._reconnect_if_closed()
                try:
                    return run(self._db.cursor())
                except psycopg.OperationalError as exc:
                    if not self._db.closed:  # a timeout, a cancel: the connection lives
                        raise
                    if attempt == 2:
                        raise StoreUnavailableError(
                            f"PostgreSQL at {redact(self.dsn)!r} failed a read twice: {exc}"
                        ) from exc
            raise AssertionError("unreachable")

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        def run(cur: Any) -> list[Any]:
            cur.execute(self._sql(sql), tuple(args))
            return list(cur.fetchall())

        return self._read(run)

    def _queries(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        """Reads sent together in a pipeline: one round trip (as ``_query`` on a lost connection)."""

        def run(_: Any) -> list[list[Any]]:
            with self._db.pipeline():
                cursors = []
                for sql, args in statements:
                    cur = self._db.cursor()
                    cur.execute(self._sql(sql), tuple(args))
                    cursors.append(cur)
            return [list(cur.fetchall()) for cur in cursors]

        return self._read(run)

    def _migrate(self, migrations: list[tuple[int, list[Migration]]]) -> None:
        with self._tx() as cur:
            # One hub process migrates at a time.
            cur.execute("SELECT pg_advisory_xact_lock(7207)")
            if self.schema:
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_version"
                " (version INTEGER NOT NULL, applied_at DOUBLE PRECISION)"
            )
            cur.execute("SELECT coalesce(max(version), 0) FROM schema_version")
            current = cur.fetchone()[0]
            for version, statements in migrations:
                if version > current:
                    for statement in statements:
                        if callable(statement):
                            statement(self, cur)
                        else:
                            cur.execute(statement)
                    cur.execute("INSERT INTO schema_version VALUES (%s, %s)", (version, time.time()))

    def _ensure_partitions(self, hours: set[int]) -> None:
        # In a transaction of its own, committed before the writer takes any hour lock or reads
        # event_segments: CREATE … PARTITION OF locks the parent ACCESS EXCLUSIVE until commit, so
        # inside a writer's transaction it waited on readers that waited on the writer's hour lock.
        if hours and any(month_bounds(h)[2] not in self._partitions for h in hours):
            with self._tx() as cur:
                self._prepare_partitions(cur, hours)

    def _prepare_partitions(self, cur: Any, hours: set[int]) -> None:
        needed = {month_bounds(ts) for ts in hours}
        missing = [m for m in needed if m[2] not in self._partitions]
        if not missing:
            return
        # A month another process created is only looked up: re-running its ALTER would take an
        # ACCESS EXCLUSIVE lock on a partition that other writers hold (a deadlock seen with two
        # bulk writers).
        cur.execute(
            "SELECT name FROM unnest(%s::text[]) AS name WHERE to_regclass(name) IS NOT NULL",
            ([m[2] for m in missing],),
        )
        existing = {str(r[0]) for r in cur.fetchall()}
        self._partitions.update(existing)
        missing = [m for m in missing if m[2] not in existing]
        if not missing:
            return
        # Several ingest workers may need the same month at once.
        cur.execute("SELECT pg_advisory_xact_lock(7208)")
        for start, end, name in sorted(missing):
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF event_segments"
                f" FOR VALUES FROM ({start}) TO ({end})"
            )
            cur.execute(f"ALTER TABLE {name} ALTER COLUMN body SET STORAGE EXTERNAL")
        self._partitions.update(m[2] for m in missing)

    def _lock_hours(self, cur: Any, hours: list[int] | Any, exclusive: set[int]) -> None:
        # One lock per hour (a live batch spans one or two): shared by hot-row writers, whose
        # duplicates the primary key refuses; exclusive for whoever writes segments of that hour,
        # who must see every hot row and segment of it. Sorted: no two writers wait on each other.
        # Advisory locks are the database's, not the schema's: the schema is in the key.
        space = zlib.crc32(f"vigie-events:{self.schema or ''}".encode()) - 2**31
        for hour in sorted(hours):
            fn = "pg_advisory_xact_lock" if hour in exclusive else "pg_advisory_xact_lock_shared"
            cur.execute(f"SELECT {fn}(%s, %s)", (space, hour // 3600))

    def _id_in(self, event_id: str) -> Any:
        return uuid.UUID(event_id)

    def _id_out(self, value: Any) -> str:
        return str(value)

    # Batch writes as UNNEST over arrays: one fixed statement whatever the batch size, so the
    # query text is parsed once and cached, instead of thousands of placeholders per batch.
    def _insert_hot(self, cur: Any, rows: list[tuple[Any, ...]]) -> list[Any]:
        cols = list(zip(*rows, strict=True))
        cur.execute(
            "INSERT INTO events_hot (id, stream, window_start, received_at, part)"
            " SELECT * FROM unnest(%b::uuid[], %b::int[], %b::bigint[], %b::float8[], %b::bytea[])"
            " ON CONFLICT DO NOTHING RETURNING id",
            [list(c) for c in cols],
        )
        return [r[0] for r in cur.fetchall()]

    def _pipeline(self) -> AbstractContextManager[Any]:
        pipeline: AbstractContextManager[Any] = self._db.pipeline()
        return pipeline

    def _reader(self, cur: Any) -> Any:
        return self._db.cursor(name="vigie_convert_events")

    def _after_compact(self) -> None:
        # The hot table is emptied every few minutes: vacuum it here rather than rely on the
        # server's autovacuum (issue 24 met a server with it off), so that its space is reused.
        # A row deleted a moment ago can be reclaimed only once every transaction that began
        # before the delete has ended (ingest workers', other clients'): wait for those first, a
        # few seconds at most, or their rows stay until the next run and the table grows by a
        # period's worth of rows (measured: 1.4 kB per live hot row instead of ~0.4 kB).
        with self._lock:
            db = self._connection()
            (deleted_by,) = db.execute("SELECT clock_timestamp()").fetchone()
            deadline = time.monotonic() + VACUUM_WAIT_S
            while (
                time.monotonic() < deadline
                and db.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND xact_start < %s"
                    " AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL) LIMIT 1",
                    (deleted_by,),
                ).fetchone()
            ):
                time.sleep(0.05)
            db.execute(f"VACUUM (ANALYZE) {self._table('events_hot')}")

    def _table(self, name: str) -> str:
        """``name``, schema-qualified when pooled: VACUUM runs outside a transaction, so without the
        search_path that a transaction sets."""
        schema = self.schema or (self._pooled.schema() if self._pooled is not None else None)
        if self._pooled is None or not schema:
            return name
        return str(pgsql.Identifier(schema, name).as_string(self._db))

    def maintain_rollups(self) -> None:
        """VACUUM (ANALYZE) the roll-ups: their in-place updates leave dead rows (rollupsql.py)."""
        with self._lock:
            self._connection().execute(f"VACUUM (ANALYZE) {self._table('rollups')}")

    def event_bytes(self) -> int:
        """Bytes the stored events take: tables, TOAST and indexes (partitions included)."""
        rows = self._query(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema()"
            " AND c.relkind = 'r' AND (c.relname IN ('event_streams', 'events_hot')"
            " OR c.relname LIKE 'event\\_segments\\_y%%')"
        )
        return int(rows[0][0])

    def _upsert_rollups(self, cur: Any, rows: list[RollupRow]) -> None:
        if not rows:
            return
        cur.execute(
            "INSERT INTO rollups (hour, site, device, place, metric, n, total, max)"
            " SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[],"
            " %b::bigint[], %b::float8[], %b::float8[])"
            " ON CONFLICT (hour, site, device, place, metric) DO UPDATE SET n = rollups.n + excluded.n,"
            " total = rollups.total + excluded.total, max = GREATEST(rollups.max, excluded.max)",
            [list(column) for column in zip(*(astuple_rollup(r) for r in rows), strict=True)],
        )

    def _touch_many(self, cur: Any, counts: dict[tuple[str, str], int], now: float) -> None:
        items = sorted(counts.items())
        cur.execute(
            "INSERT INTO devices (site, device, first_seen, last_seen, events, quarantined)"
            " SELECT s, d, %s, %s, n, 0 FROM unnest(%b::text[], %b::text[], %b::bigint[]) AS u(s, d, n)"
            " ON CONFLICT (site, device) DO UPDATE SET"
            " last_seen = GREATEST(devices.last_seen, excluded.last_seen),"
            " events = devices.events + excluded.events",
            [now, now, [k[0] for k, _ in items], [k[1] for k, _ in items], [n for _, n in items]],
        )

    def partitions(self) -> list[str]:
        """Names of the monthly partitions of the event segments, oldest first."""
        rows = self._query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace"
            " WHERE p.relname = 'event_segments' AND n.nspname = current_schema() ORDER BY c.relname"
        )
        return [r[0] for r in rows]

    def _purge_segments(self, cur: Any, before_hour: int) -> int:
        removed = 0
        cur.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace"
            " WHERE p.relname = 'event_segments' AND n.nspname = current_schema()"
        )
        for (name,) in cur.fetchall():
            m = _PARTITION.match(name)
            if not m:
                continue
            _, end, _ = month_bounds(calendar.timegm((int(m[1]), int(m[2]), 1, 0, 0, 0)))
            if end <= before_hour:
                # A whole month past retention: dropping it is instant and leaves no bloat.
                cur.execute(f"SELECT coalesce(sum(n), 0) FROM {name}")
                removed += int(cur.fetchone()[0])
                cur.execute(f"DROP TABLE {name}")
                self._partitions.discard(name)
        return removed + super()._purge_segments(cur, before_hour)

    def _after_read(self) -> None:
        pass  # autocommit: reads hold no transaction open

    def server_setting(self, name: str) -> str:
        """A server setting as ``SHOW`` prints it (``synchronous_commit``, ...)."""
        return str(self._query("SELECT current_setting(%s)", (name,))[0][0])

    def drop_schema(self) -> None:
        """Remove this store's schema and everything in it (tests)."""
        if self.schema:
            with self._lock:
                self._db.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
