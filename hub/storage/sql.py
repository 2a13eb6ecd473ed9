"""The SQL both backends share; each backend supplies its connection, dialect and migrations.

Writes are idempotent on the event id (``ON CONFLICT DO NOTHING … RETURNING``),
and roll-ups are incremented only for the rows that were really inserted, in
the same transaction: a redelivered message changes nothing, twice over.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from hub.storage.base import (
    QUARANTINE_KEEP_BYTES,
    CubeQuery,
    CubeRow,
    EventQuery,
    QuarantineRecord,
    Retention,
    RollupQuery,
)
from hub.storage.rollup import RollupRow, rollup_rows
from vigie import wire
from vigie.exceptions import EnrolmentError

__all__ = ["SqlStore", "index_columns"]

DAY = 86_400
_INSERT_CHUNK = 500


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(epoch))


def index_columns(e: wire.Event) -> tuple[str, str, str, str, str, int, int]:
    """(id, site, device, kind, place, window start, window length) of any event kind."""
    if isinstance(e, wire.Alert):
        return (e.id, e.site, e.device, e.kind, e.zone or e.line or "", e.ts, wire.ALERT_GRANULARITY_S)
    if isinstance(e, wire.Measurement):
        return (e.id, e.site, e.device, e.kind, e.sensor, e.window_start, e.window_s)
    place = e.zone if isinstance(e, wire.ZoneCountEvent) else e.line
    return (e.id, e.site, e.device, e.kind, place, e.window_start, e.window_s)


def clock_skew_s(device_ts: int, received_at: float) -> int:
    """Device clock minus hub clock, to the heartbeat's granularity (0 within it; pure)."""
    skew = device_ts - received_at
    # Heartbeat times are rounded down to HEARTBEAT_GRANULARITY_S and take a moment to arrive.
    if -wire.HEARTBEAT_GRANULARITY_S - 5 <= skew <= 5:
        return 0
    return round(skew)


class SqlStore:
    """Shared implementation; subclasses set ``backend``, ``_greatest`` and the connection."""

    backend = "sql"
    _greatest = "max"  # the two-argument maximum: max() in SQLite, GREATEST() in PostgreSQL
    _placeholder = "?"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._db: Any = None

    # -- plumbing ---------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql if self._placeholder == "?" else sql.replace("?", self._placeholder)

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """One transaction on the shared connection (the lock serialises its users)."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute(self._begin)
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    _begin = "BEGIN"

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            cur = self._db.cursor()
            cur.execute(self._sql(sql), tuple(args))
            rows = cur.fetchall()
            self._after_read()
            return list(rows)

    def _after_read(self) -> None:
        """PostgreSQL ends the implicit read transaction here."""

    def _prepare_partitions(self, cur: Any, window_starts: set[int]) -> None:
        """PostgreSQL creates the monthly partitions a batch needs."""

    # -- writes -------------------------------------------------------------------------
    def add_events(self, events: Sequence[wire.Event], received_at: float) -> int:
        if not events:
            return 0
        by_id = {e.id: e for e in events}
        inserted: list[str] = []
        with self._tx() as cur:
            self._prepare_partitions(cur, {index_columns(e)[5] for e in by_id.values()})
            items = list(by_id.values())
            for i in range(0, len(items), _INSERT_CHUNK):
                chunk = items[i : i + _INSERT_CHUNK]
                rows = [(*index_columns(e), e.model_dump_json(), received_at) for e in chunk]
                inserted += self._insert_events(cur, rows)
            new = [by_id[i] for i in inserted]
            self._add_rollups(cur, new)
            per_device: dict[tuple[str, str], int] = {}
            for e in events:  # every delivery counts as traffic, even a duplicate
                per_device[(e.site, e.device)] = per_device.get((e.site, e.device), 0) + 1
            self._touch_many(cur, per_device, received_at)
        return len(inserted)

    def _insert_events(self, cur: Any, rows: list[tuple[Any, ...]]) -> list[str]:
        """Insert rows, skipping ids already stored; returns the ids really inserted."""
        values = ",".join(["(?,?,?,?,?,?,?,?,?)"] * len(rows))
        cur.execute(
            "INSERT INTO events (id, site, device, kind, place, window_start, window_s, body,"
            f" received_at) VALUES {values} ON CONFLICT DO NOTHING RETURNING id",
            [v for row in rows for v in row],
        )
        return [r[0] for r in cur.fetchall()]

    def _add_rollups(self, cur: Any, events: Sequence[wire.Event]) -> None:
        rows = sorted(rollup_rows(events), key=lambda r: (r.hour, r.site, r.device, r.place, r.metric))
        self._upsert_rollups(cur, rows)

    def _upsert_rollups(self, cur: Any, rows: list[RollupRow]) -> None:
        g = self._greatest
        # Keys are unique within a batch (rollup_rows aggregates), so one multi-row upsert per chunk:
        # one round trip instead of one per row, which is what PostgreSQL's throughput needs.
        for i in range(0, len(rows), _INSERT_CHUNK):
            chunk = rows[i : i + _INSERT_CHUNK]
            values = ",".join(["(?,?,?,?,?,?,?,?)"] * len(chunk))
            cur.execute(
                self._sql(
                    f"INSERT INTO rollups (hour, site, device, place, metric, n, total, max) VALUES {values}"
                    " ON CONFLICT (hour, site, device, place, metric) DO UPDATE SET"
                    " n = rollups.n + excluded.n, total = rollups.total + excluded.total,"
                    f" max = {g}(rollups.max, excluded.max)"
                ),
                [
                    v
                    for r in chunk
                    for v in (r.hour, r.site, r.device, r.place, r.metric, r.n, r.total, r.max)
                ],
            )

    def _touch_many(self, cur: Any, counts: dict[tuple[str, str], int], now: float) -> None:
        """Upsert many devices' traffic counters in one statement (sorted: no deadlocks between workers)."""
        items = sorted(counts.items())
        for i in range(0, len(items), _INSERT_CHUNK):
            chunk = items[i : i + _INSERT_CHUNK]
            values = ",".join(["(?,?,?,?,?,0)"] * len(chunk))
            cur.execute(
                self._sql(
                    "INSERT INTO devices (site, device, first_seen, last_seen, events, quarantined)"
                    f" VALUES {values}"
                    " ON CONFLICT (site, device) DO UPDATE SET"
                    f" last_seen = {self._greatest}(devices.last_seen, excluded.last_seen),"
                    " events = devices.events + excluded.events"
                ),
                [v for (site, device), n in chunk for v in (site, device, now, now, n)],
            )

    def _touch(
        self, cur: Any, site: str, device: str, now: float, *, events: int = 0, quarantined: int = 0
    ) -> None:
        cur.execute(
            self._sql(
                "INSERT INTO devices (site, device, first_seen, last_seen, events, quarantined)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT (site, device) DO UPDATE SET"
                f" last_seen = {self._greatest}(devices.last_seen, excluded.last_seen),"
                " events = devices.events + excluded.events,"
                " quarantined = devices.quarantined + excluded.quarantined"
            ),
            (site, device, now, now, events, quarantined),
        )

    def record_heartbeat(self, beat: wire.Heartbeat, received_at: float) -> None:
        with self._tx() as cur:
            self._touch(cur, beat.site, beat.device, received_at)
            # The device's clock against the hub's: a skewed clock shifts its event windows
            # (stored as sent, never dropped); operators see the offset in /v1/devices.
            body = {**beat.model_dump(mode="json"), "clock_skew_s": clock_skew_s(beat.ts, received_at)}
            cur.execute(
                self._sql("UPDATE devices SET heartbeat = ? WHERE site = ? AND device = ?"),
                (json.dumps(body), beat.site, beat.device),
            )

    def record_status(self, status: wire.Status, received_at: float) -> None:
        with self._tx() as cur:
            self._touch(cur, status.site, status.device, received_at)
            # Retained and last-will messages can arrive out of order: keep the newest.
            cur.execute(
                self._sql(
                    "UPDATE devices SET status = ?, status_ts = ? WHERE site = ? AND device = ?"
                    " AND (status_ts IS NULL OR status_ts <= ?)"
                ),
                (status.state, status.ts, status.site, status.device, status.ts),
            )

    def quarantine(self, records: Sequence[QuarantineRecord]) -> None:
        if not records:
            return
        with self._tx() as cur:
            cur.executemany(
                self._sql(
                    "INSERT INTO quarantine (received_at, topic, site, device, field, reason, size, payload)"
                    " VALUES (?,?,?,?,?,?,?,?)"
                ),
                [
                    (r.received_at, r.topic[:256], r.site, r.device, r.field[:128], r.reason[:512],
                     len(r.payload), r.payload[:QUARANTINE_KEEP_BYTES])
                    for r in records
                ],
            )  # fmt: skip
            for r in records:
                if r.site and r.device:
                    self._touch(cur, r.site, r.device, r.received_at, quarantined=1)

    # -- reads ---------------------------------------------------------------------------
    @staticmethod
    def _where(conditions: Sequence[tuple[str, Any]]) -> tuple[str, list[Any]]:
        """`` WHERE a AND b`` from (clause with one ?, value) pairs whose value is given."""
        given = [(clause, value) for clause, value in conditions if value is not None]
        if not given:
            return "", []
        return " WHERE " + " AND ".join(c for c, _ in given), [v for _, v in given]

    def list_events(self, query: EventQuery) -> tuple[list[dict[str, Any]], int | None]:
        where, args = self._where([
            ("site = ?", query.site), ("device = ?", query.device), ("kind = ?", query.kind),
            ("place = ?", query.place), ("window_start >= ?", query.since), ("window_start < ?", query.until),
            ("seq < ?", query.cursor),
        ])  # fmt: skip
        rows = self._query(
            f"SELECT seq, body, received_at FROM events{where} ORDER BY seq DESC LIMIT ?",
            (*args, query.limit + 1),
        )
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        data = [{**json.loads(r[1]), "received_at": r[2]} for r in rows]
        return data, (int(rows[-1][0]) if more and rows else None)

    def list_rollups(self, query: RollupQuery) -> list[dict[str, Any]]:
        metric = query.metric
        prefix = metric is not None and metric.endswith("*")
        where, args = self._where([
            ("site = ?", query.site), ("device = ?", query.device), ("place = ?", query.place),
            ("metric LIKE ?" if prefix else "metric = ?",
             (metric[:-1].replace("%", "") + "%") if prefix and metric else metric),
            ("hour >= ?", query.since), ("hour < ?", query.until),
        ])  # fmt: skip
        rows = self._query(
            f"SELECT hour, site, device, place, metric, n, total, max FROM rollups{where}"
            " ORDER BY hour, site, device, place, metric LIMIT ?",
            (*args, query.limit),
        )
        return [
            {"hour": r[0], "site": r[1], "device": r[2], "place": r[3], "metric": r[4], "n": r[5],
             "total": r[6], "max": r[7], "mean": round(r[6] / r[5], 3) if r[5] else 0.0}
            for r in rows
        ]  # fmt: skip

    def record_ingest_status(self, worker: str, connected: bool, stats: dict[str, Any], now: float) -> None:
        """Where each ingest process says how it is doing (read by /healthz in any process)."""
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO ingest_workers (worker, updated_at, connected, stats) VALUES (?,?,?,?)"
                    " ON CONFLICT (worker) DO UPDATE SET updated_at = excluded.updated_at,"
                    " connected = excluded.connected, stats = excluded.stats"
                ),
                (worker, now, connected, json.dumps(stats)),
            )

    def list_ingest_status(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT worker, updated_at, connected, stats FROM ingest_workers ORDER BY worker")
        return [
            {"worker": r[0], "updated_at": r[1], "connected": bool(r[2]), **json.loads(r[3])} for r in rows
        ]

    # -- enrolment registry ------------------------------------------------------------
    def add_enrol_token(
        self, token_hash: str, site: str, profile: str, device: str | None, now: float, expires_at: float
    ) -> None:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO enrol_tokens (token_hash, site, profile, device, created_at, expires_at)"
                    " VALUES (?,?,?,?,?,?)"
                ),
                (token_hash, site, profile, device, now, expires_at),
            )

    def enrol_device(
        self, token_hash: str, device: str, now: float, issue: Callable[[str, str], tuple[str, str, float]]
    ) -> dict[str, Any]:
        with self._tx() as cur:
            # FOR UPDATE-like: SQLite's BEGIN IMMEDIATE and PostgreSQL's row lock below both make
            # two devices racing for one token see it one after the other.
            lock = "" if self._placeholder == "?" else " FOR UPDATE"
            cur.execute(
                self._sql(
                    "SELECT site, profile, device, expires_at, used_at, used_by FROM enrol_tokens"
                    " WHERE token_hash = ?" + lock
                ),
                (token_hash,),
            )
            row = cur.fetchone()
            if row is None:
                raise EnrolmentError(
                    "token: unknown enrolment token; create one with `vigie hub enrol-token create`"
                )
            site, profile, bound, expires_at, used_at, used_by = row
            if used_at is not None:
                raise EnrolmentError(
                    f"token: already used by {site}/{used_by} at {_iso(used_at)}; tokens are single-use, "
                    "create a new one"
                )
            if expires_at <= now:
                raise EnrolmentError(f"token: expired at {_iso(expires_at)}; create a new one")
            if bound is not None and bound != device:
                raise EnrolmentError(f"device: this token is for device {bound!r}, not {device!r}")
            cur.execute(
                self._sql("SELECT revoked_at FROM enrolments WHERE site = ? AND device = ?"), (site, device)
            )
            existing = cur.fetchone()
            if existing is not None and existing[0] is None:
                raise EnrolmentError(
                    f"device: {site}/{device} is already enrolled; to replace its hardware, "
                    f"revoke it first (`vigie hub revoke {site}/{device}`)"
                )
            serial, fp, not_after = issue(site, device)
            cur.execute(
                self._sql("UPDATE enrol_tokens SET used_at = ?, used_by = ? WHERE token_hash = ?"),
                (now, device, token_hash),
            )
            cur.execute(
                self._sql(
                    "INSERT INTO enrolments"
                    " (site, device, profile, serial, fingerprint, not_after, enrolled_at)"
                    " VALUES (?,?,?,?,?,?,?)"
                    " ON CONFLICT (site, device) DO UPDATE SET profile = excluded.profile,"
                    " serial = excluded.serial, fingerprint = excluded.fingerprint,"
                    " not_after = excluded.not_after, enrolled_at = excluded.enrolled_at, revoked_at = NULL"
                ),
                (site, device, profile, serial, fp, not_after, now),
            )
        return {"site": site, "device": device, "profile": profile, "serial": serial, "fingerprint": fp}

    def list_enrolments(self) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT site, device, profile, serial, fingerprint, not_after, enrolled_at, revoked_at"
            " FROM enrolments ORDER BY site, device"
        )
        keys = (
            "site",
            "device",
            "profile",
            "serial",
            "fingerprint",
            "not_after",
            "enrolled_at",
            "revoked_at",
        )
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def revoke_device(self, site: str, device: str, now: float) -> str | None:
        with self._tx() as cur:
            cur.execute(
                self._sql("SELECT serial, revoked_at FROM enrolments WHERE site = ? AND device = ?"),
                (site, device),
            )
            row = cur.fetchone()
            if row is None:
                return None
            serial = str(row[0])
            if row[1] is None:
                cur.execute(
                    self._sql("UPDATE enrolments SET revoked_at = ? WHERE site = ? AND device = ?"),
                    (now, site, device),
                )
            cur.execute(
                self._sql(
                    "INSERT INTO revoked_certs (serial, site, device, revoked_at) VALUES (?,?,?,?)"
                    " ON CONFLICT (serial) DO NOTHING"
                ),
                (serial, site, device, now),
            )
        return serial

    def list_revoked(self) -> list[tuple[str, float]]:
        return [(str(r[0]), float(r[1])) for r in self._query("SELECT serial, revoked_at FROM revoked_certs")]

    # -- city data fusion ----------------------------------------------------------------
    def record_import(
        self, source: str, sha256: str, file: str, report: dict[str, Any], cube: Sequence[CubeRow], now: float
    ) -> bool:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO imports (source, sha256, file, imported_at, report) VALUES (?,?,?,?,?)"
                    " ON CONFLICT (source, sha256) DO NOTHING RETURNING sha256"
                ),
                (source, sha256, file, now, json.dumps(report)),
            )
            if cur.fetchone() is None:
                return False
            self._upsert_cube(cur, cube, "cube.n + excluded.n")
        return True

    def replace_cube(self, rows: Sequence[CubeRow]) -> None:
        with self._tx() as cur:
            self._upsert_cube(cur, rows, "excluded.n")

    def _upsert_cube(self, cur: Any, rows: Sequence[CubeRow], new_n: str) -> None:
        """Insert cube rows; an existing (zone, hour, source, category) gets ``n = new_n``."""
        values = [(r.zone, r.hour, r.source, r.category, r.n, r.span_h) for r in rows]
        sql = self._sql(
            "INSERT INTO cube (zone, hour, source, category, n, span_h) VALUES (?,?,?,?,?,?)"
            f" ON CONFLICT (zone, hour, source, category) DO UPDATE SET n = {new_n}"
        )
        for i in range(0, len(values), _INSERT_CHUNK):
            cur.executemany(sql, values[i : i + _INSERT_CHUNK])

    def list_zones(self, prefix: str) -> list[str]:
        """The distinct zone keys of the cube starting with ``prefix`` (``h3:``, ``poly:``)."""
        rows = self._query("SELECT DISTINCT zone FROM cube WHERE zone LIKE ? ORDER BY zone", (prefix + "%",))
        return [str(r[0]) for r in rows]

    def list_imports(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT source, sha256, file, imported_at, report FROM imports ORDER BY imported_at DESC LIMIT ?",
            (limit,),
        )
        return [{"source": r[0], "sha256": r[1], "file": r[2], "imported_at": r[3],
                 "report": json.loads(r[4])}
                for r in rows]  # fmt: skip

    def query_cube(self, query: CubeQuery) -> list[dict[str, Any]]:
        where: list[str] = []
        args: list[Any] = []
        if query.zone_prefix:
            where.append("zone LIKE ?")
            args.append(query.zone_prefix.replace("%", "") + "%")
        for column, values in (
            ("zone", query.zones),
            ("source", query.sources),
            ("category", query.categories),
        ):
            if values:
                where.append(f"{column} IN ({','.join('?' * len(values))})")
                args.extend(values)
        if query.start is not None:
            where.append("hour >= ?")
            args.append(query.start)
        if query.end is not None:
            where.append("hour < ?")
            args.append(query.end)
        sql = "SELECT zone, hour, source, category, n, span_h FROM cube"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY hour, zone, source, category LIMIT ?"
        rows = self._query(sql, (*args, query.limit))
        return [{"zone": r[0], "hour": int(r[1]), "source": r[2], "category": r[3], "n": float(r[4]),
                 "span_h": int(r[5])} for r in rows]  # fmt: skip

    def save_state(self, name: str, body: str, now: float) -> None:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO model_state (name, body, updated_at) VALUES (?,?,?) ON CONFLICT (name)"
                    " DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at"
                ),
                (name, body, now),
            )

    def load_state(self, name: str) -> str | None:
        rows = self._query("SELECT body FROM model_state WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def add_anomalies(self, rows: Sequence[dict[str, Any]], now: float) -> int:
        keys = ("zone", "hour", "source", "category", "observed", "expected", "p")
        values = [(*(r[k] for k in keys), now)
                  for r in rows]  # fmt: skip
        if not values:
            return 0
        with self._tx() as cur:
            cur.executemany(
                self._sql(
                    "INSERT INTO anomalies (zone, hour, source, category, observed, expected, p, created_at)"
                    " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (zone, hour, source, category) DO NOTHING"
                ),
                values,
            )
        return len(values)

    def list_anomalies(
        self, start: int | None = None, end: int | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT zone, hour, source, category, observed, expected, p FROM anomalies"
            " WHERE hour >= ? AND hour < ? ORDER BY hour DESC, p LIMIT ?",
            (start if start is not None else 0, end if end is not None else 2**62, limit),
        )
        keys = ("zone", "hour", "source", "category", "observed", "expected", "p")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # -- access control ------------------------------------------------------------------
    def add_user(self, username: str, password_hash: str, role: str, now: float) -> bool:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO users (username, password_hash, role, created_at) VALUES (?,?,?,?)"
                    " ON CONFLICT (username) DO NOTHING RETURNING username"
                ),
                (username, password_hash, role, now),
            )
            return cur.fetchone() is not None

    def get_user(self, username: str) -> dict[str, Any] | None:
        rows = self._query(
            "SELECT username, password_hash, role, created_at, disabled_at FROM users WHERE username = ?",
            (username,),
        )
        keys = ("username", "password_hash", "role", "created_at", "disabled_at")
        return dict(zip(keys, rows[0], strict=True)) if rows else None

    def list_users(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT username, role, created_at, disabled_at FROM users ORDER BY username")
        return [dict(zip(("username", "role", "created_at", "disabled_at"), r, strict=True)) for r in rows]

    def update_user(
        self, username: str, *, password_hash: str | None = None, role: str | None = None,
        disabled_at: float | bool | None = False,
    ) -> bool:  # fmt: skip
        sets: list[str] = []
        args: list[Any] = []
        for column, value in (("password_hash", password_hash), ("role", role)):
            if value is not None:
                sets.append(f"{column} = ?")
                args.append(value)
        if disabled_at is not False:
            sets.append("disabled_at = ?")
            args.append(disabled_at)
        if not sets:
            return self.get_user(username) is not None
        with self._tx() as cur:
            cur.execute(
                self._sql(f"UPDATE users SET {', '.join(sets)} WHERE username = ?"), (*args, username)
            )
            return bool(cur.rowcount)

    def add_api_token(
        self, token_hash: str, username: str, label: str, now: float, expires_at: float
    ) -> None:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO api_tokens (token_hash, username, label, created_at, expires_at)"
                    " VALUES (?,?,?,?,?)"
                ),
                (token_hash, username, label, now, expires_at),
            )

    def get_api_token(self, token_hash: str) -> dict[str, Any] | None:
        rows = self._query(
            "SELECT t.username, u.role, t.label, t.expires_at, t.revoked_at, u.disabled_at FROM api_tokens t"
            " JOIN users u ON u.username = t.username WHERE t.token_hash = ?",
            (token_hash,),
        )
        keys = ("username", "role", "label", "expires_at", "revoked_at", "disabled_at")
        return dict(zip(keys, rows[0], strict=True)) if rows else None

    def revoke_api_tokens(
        self, *, token_hash: str | None = None, username: str | None = None, now: float
    ) -> int:
        column, value = ("token_hash", token_hash) if token_hash else ("username", username)
        with self._tx() as cur:
            cur.execute(
                self._sql(f"UPDATE api_tokens SET revoked_at = ? WHERE {column} = ? AND revoked_at IS NULL"),
                (now, value),
            )
            return int(cur.rowcount)

    # -- audit log -----------------------------------------------------------------------
    _AUDIT_COLUMNS = ("seq", "ts", "username", "role", "method", "path", "params", "purpose", "status",
                      "prev_hash", "hash")  # fmt: skip

    def append_audit(
        self, entry: dict[str, Any], chain: Callable[[str, dict[str, Any]], str]
    ) -> tuple[int, str]:
        with self._tx() as cur:
            if self._placeholder != "?":
                # One writer at a time on the chain's head, across every hub process.
                cur.execute("LOCK TABLE audit IN SHARE ROW EXCLUSIVE MODE")
            cur.execute("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1")
            row = cur.fetchone()
            prev = str(row[0]) if row else "0" * 64
            digest = chain(prev, entry)
            cur.execute(
                self._sql(
                    "INSERT INTO audit"
                    " (ts, username, role, method, path, params, purpose, status, prev_hash, hash)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?) RETURNING seq"
                ),
                (entry["ts"], entry["username"], entry["role"], entry["method"], entry["path"],
                 json.dumps(entry["params"], sort_keys=True), entry["purpose"], entry["status"],
                 prev, digest),
            )  # fmt: skip
            return int(cur.fetchone()[0]), digest

    def list_audit(
        self, *, after: int = 0, limit: int = 1000, username: str | None = None, path: str | None = None,
        since: float | None = None, until: float | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        where: list[str] = ["seq > ?"]
        args: list[Any] = [after]
        for clause, value in (("username = ?", username), ("path LIKE ?", f"{path}%" if path else None),
                              ("ts >= ?", since), ("ts < ?", until)):  # fmt: skip
            if value is not None:
                where.append(clause)
                args.append(value)
        rows = self._query(
            f"SELECT {', '.join(self._AUDIT_COLUMNS)} FROM audit WHERE {' AND '.join(where)}"
            " ORDER BY seq LIMIT ?",
            (*args, limit),
        )
        out = []
        for r in rows:
            item = dict(zip(self._AUDIT_COLUMNS, r, strict=True))
            item["params"] = json.loads(item["params"])
            out.append(item)
        return out

    def list_devices(self) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT site, device, first_seen, last_seen, status, events, quarantined, heartbeat"
            " FROM devices ORDER BY site, device"
        )
        now = time.time()
        return [
            {"site": r[0], "device": r[1], "first_seen": r[2], "last_seen": r[3],
             "seconds_since_seen": round(now - r[3], 1), "status": r[4], "events": r[5], "quarantined": r[6],
             "heartbeat": json.loads(r[7]) if r[7] else None}
            for r in rows
        ]  # fmt: skip

    def list_quarantine(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT received_at, topic, site, device, field, reason, size, payload FROM quarantine"
            " ORDER BY seq DESC LIMIT ?",
            (limit,),
        )
        return [
            {"received_at": r[0], "topic": r[1], "site": r[2], "device": r[3], "field": r[4], "reason": r[5],
             "size": r[6], "payload_hex": bytes(r[7]).hex()}
            for r in rows
        ]  # fmt: skip

    def quarantine_count(self) -> int:
        return int(self._query("SELECT count(*) FROM quarantine")[0][0])

    def count_events(self) -> int:
        return int(self._query("SELECT count(*) FROM events")[0][0])

    def schema_version(self) -> int:
        return int(self._query("SELECT max(version) FROM schema_version")[0][0])

    def ping(self) -> bool:
        return bool(self._query("SELECT 1")[0][0] == 1)

    # -- retention -------------------------------------------------------------------------
    def purge(self, retention: Retention, now: float) -> dict[str, int]:
        removed = {"events": 0, "rollups": 0, "quarantine": 0}
        with self._tx() as cur:
            if retention.events_days is not None:
                cutoff = int(now - retention.events_days * DAY)
                removed["events"] = self._purge_events(cur, cutoff)
            if retention.rollups_days is not None:
                cur.execute(
                    self._sql("DELETE FROM rollups WHERE hour < ?"),
                    (int(now - retention.rollups_days * DAY),),
                )
                removed["rollups"] = max(cur.rowcount, 0)
            if retention.quarantine_days is not None:
                cur.execute(
                    self._sql("DELETE FROM quarantine WHERE received_at < ?"),
                    (now - retention.quarantine_days * DAY,),
                )
                removed["quarantine"] = max(cur.rowcount, 0)
            cur.execute(
                self._sql(
                    "INSERT INTO purges (ran_at, events, rollups, quarantine, policy) VALUES (?,?,?,?,?)"
                ),
                (
                    now,
                    removed["events"],
                    removed["rollups"],
                    removed["quarantine"],
                    retention.model_dump_json(),
                ),
            )
        return removed

    def _purge_events(self, cur: Any, cutoff: int) -> int:
        cur.execute(self._sql("DELETE FROM events WHERE window_start < ?"), (cutoff,))
        return max(int(cur.rowcount), 0)

    def list_purges(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT ran_at, events, rollups, quarantine, policy FROM purges ORDER BY ran_at DESC LIMIT ?",
            (limit,),
        )
        return [
            {"ran_at": r[0], "events": r[1], "rollups": r[2], "quarantine": r[3], "policy": json.loads(r[4])}
            for r in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._db.close()
