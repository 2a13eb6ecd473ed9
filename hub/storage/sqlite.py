"""SQLite backend (WAL): the embedded default, for the demo and small deployments."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.storage.cubelevels import SQLITE_MONTH_OF, backfill_sql
from hub.storage.sql import SqlStore

__all__ = ["MIGRATIONS", "Migration", "SQLiteStore"]

#: One step of a migration: SQL, or Python given the store and the migration's cursor.
Migration = str | Callable[[Any, Any], None]

#: Versioned schema: each entry runs once, in order, in one transaction.
MIGRATIONS: list[tuple[int, list[Migration]]] = [
    (1, [
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            site TEXT NOT NULL, device TEXT NOT NULL, kind TEXT NOT NULL, place TEXT NOT NULL,
            window_start INTEGER NOT NULL, window_s INTEGER NOT NULL,
            body TEXT NOT NULL, received_at REAL NOT NULL)""",
        "CREATE INDEX events_window ON events (window_start)",
        "CREATE INDEX events_device ON events (site, device, window_start)",
        """CREATE TABLE devices (
            site TEXT NOT NULL, device TEXT NOT NULL,
            first_seen REAL NOT NULL, last_seen REAL NOT NULL,
            status TEXT, status_ts INTEGER, heartbeat TEXT,
            events INTEGER NOT NULL DEFAULT 0, quarantined INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (site, device))""",
        """CREATE TABLE quarantine (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL NOT NULL, topic TEXT NOT NULL,
            site TEXT, device TEXT, field TEXT NOT NULL, reason TEXT NOT NULL,
            size INTEGER NOT NULL, payload BLOB NOT NULL)""",
    ]),
    (2, [
        """CREATE TABLE rollups (
            hour INTEGER NOT NULL, site TEXT NOT NULL, device TEXT NOT NULL, place TEXT NOT NULL,
            metric TEXT NOT NULL, n INTEGER NOT NULL, total REAL NOT NULL, max REAL NOT NULL,
            PRIMARY KEY (hour, site, device, place, metric))""",
        "CREATE INDEX rollups_place ON rollups (site, place, hour)",
        """CREATE TABLE purges (
            ran_at REAL NOT NULL, events INTEGER NOT NULL, rollups INTEGER NOT NULL,
            quarantine INTEGER NOT NULL, policy TEXT NOT NULL)""",
        "CREATE INDEX quarantine_received ON quarantine (received_at)",
    ]),
    (3, [
        """CREATE TABLE ingest_workers (
            worker TEXT PRIMARY KEY, updated_at REAL NOT NULL, connected INTEGER NOT NULL,
            stats TEXT NOT NULL)""",
    ]),
    (4, [
        # Enrolment (hub/enrolment.py): one-time tokens, stored as SHA-256 hashes only.
        """CREATE TABLE enrol_tokens (
            token_hash TEXT PRIMARY KEY, site TEXT NOT NULL, profile TEXT NOT NULL, device TEXT,
            created_at REAL NOT NULL, expires_at REAL NOT NULL, used_at REAL, used_by TEXT)""",
        """CREATE TABLE enrolments (
            site TEXT NOT NULL, device TEXT NOT NULL, profile TEXT NOT NULL,
            serial TEXT NOT NULL, fingerprint TEXT NOT NULL, not_after REAL NOT NULL,
            enrolled_at REAL NOT NULL, revoked_at REAL,
            PRIMARY KEY (site, device))""",
        # Every revoked serial stays here (the CRL), even after the device is enrolled again.
        """CREATE TABLE revoked_certs (
            serial TEXT PRIMARY KEY, site TEXT NOT NULL, device TEXT NOT NULL, revoked_at REAL NOT NULL)""",
    ]),
    (5, [
        # City data fusion (hub/fusion): zone × hour × source × category counts.
        """CREATE TABLE cube (
            zone TEXT NOT NULL, hour INTEGER NOT NULL, source TEXT NOT NULL, category TEXT NOT NULL,
            n REAL NOT NULL, span_h INTEGER NOT NULL DEFAULT 1,
            PRIMARY KEY (zone, hour, source, category))""",
        "CREATE INDEX cube_hour ON cube (hour)",
        # One row per imported file: importing the same file twice adds nothing.
        """CREATE TABLE imports (
            source TEXT NOT NULL, sha256 TEXT NOT NULL, file TEXT NOT NULL, imported_at REAL NOT NULL,
            report TEXT NOT NULL, PRIMARY KEY (source, sha256))""",
        "CREATE TABLE model_state (name TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at REAL NOT NULL)",
        """CREATE TABLE anomalies (
            zone TEXT NOT NULL, hour INTEGER NOT NULL, source TEXT NOT NULL, category TEXT NOT NULL,
            observed REAL NOT NULL, expected REAL NOT NULL, p REAL NOT NULL, created_at REAL NOT NULL,
            PRIMARY KEY (zone, hour, source, category))""",
        "CREATE INDEX anomalies_hour ON anomalies (hour)",
    ]),
    (6, [
        # Access control (hub/auth): passwords as argon2id hashes, API tokens as SHA-256 hashes.
        """CREATE TABLE users (
            username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, role TEXT NOT NULL,
            created_at REAL NOT NULL, disabled_at REAL)""",
        """CREATE TABLE api_tokens (
            token_hash TEXT PRIMARY KEY, username TEXT NOT NULL, label TEXT NOT NULL,
            created_at REAL NOT NULL, expires_at REAL NOT NULL, revoked_at REAL)""",
        # The audit log: every request, hash-chained (hub/audit.py).
        """CREATE TABLE audit (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, username TEXT, role TEXT,
            method TEXT NOT NULL,
            path TEXT NOT NULL, params TEXT NOT NULL, purpose TEXT, status INTEGER NOT NULL,
            prev_hash TEXT NOT NULL, hash TEXT NOT NULL)""",
        "CREATE INDEX audit_ts ON audit (ts)",
        # Append-only, enforced by the database too: no UPDATE, no DELETE on the audit log.
        """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
        """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    ]),
    (7, [
        # OTA campaigns (hub/campaigns.py), shared by every hub host on this database.
        """CREATE TABLE campaigns (
            id TEXT PRIMARY KEY, state TEXT NOT NULL, created_at REAL NOT NULL,
            updated_at REAL NOT NULL, doc TEXT NOT NULL)""",
    ]),
    (8, [
        # Login throttling shared by every hub process (hub/storage/throttle.py, issue 17).
        "CREATE TABLE throttle (name TEXT PRIMARY KEY, state TEXT NOT NULL, expires_at REAL NOT NULL)",
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
            serial TEXT PRIMARY KEY, site TEXT NOT NULL, device TEXT NOT NULL, issued_at REAL NOT NULL)""",
        "CREATE INDEX device_certs_device ON device_certs (site, device)",
    ]),
    (11, [
        # Compact events (issue 24, hub/storage/segments.py): a dictionary of streams, live rows,
        # and one packed segment per stream and hour. The old rows are converted, then dropped.
        """CREATE TABLE event_streams (
            stream INTEGER PRIMARY KEY, site TEXT NOT NULL, device TEXT NOT NULL, kind TEXT NOT NULL,
            place TEXT NOT NULL, UNIQUE (site, device, kind, place))""",
        """CREATE TABLE events_hot (
            id BLOB PRIMARY KEY, stream INTEGER NOT NULL, window_start INTEGER NOT NULL,
            received_at REAL NOT NULL, part BLOB NOT NULL)""",
        "CREATE INDEX events_hot_time ON events_hot (window_start, id)",
        "CREATE INDEX events_hot_stream ON events_hot (stream, window_start)",
        """CREATE TABLE event_segments (
            stream INTEGER NOT NULL, hour INTEGER NOT NULL, seg INTEGER NOT NULL, n INTEGER NOT NULL,
            body BLOB NOT NULL, PRIMARY KEY (stream, hour, seg))""",
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
            level TEXT NOT NULL, start INTEGER NOT NULL, zone TEXT NOT NULL, source TEXT NOT NULL,
            category TEXT NOT NULL, n REAL NOT NULL,
            PRIMARY KEY (level, start, zone, source, category))""",
        # Cube pages come in (hour, zone, source, category) order: this index walks them.
        "DROP INDEX cube_hour",
        "CREATE INDEX cube_hour ON cube (hour, zone, source, category)",
        *backfill_sql(SQLITE_MONTH_OF),
    ]),
    (13, [
        # Rate limits shared by every hub process on this file (hub/storage/buckets.py, issue 22).
        "CREATE TABLE buckets (name TEXT PRIMARY KEY, full_at REAL NOT NULL, taken INTEGER NOT NULL)",
    ]),
    (14, [
        # Periodic jobs run by one hub process at a time (hub/storage/leases.py, hub/jobs.py, issue 22).
        """CREATE TABLE job_leases (
            name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at REAL NOT NULL, ran_at REAL NOT NULL,
            runs INTEGER NOT NULL)""",
    ]),
    (16, [
        # Issue 24: the compaction job packs the current hour every few minutes (hub/compact_job.py),
        # so an hour holds several segments per stream. ``hi`` is a segment's newest window start:
        # ingest looks for duplicates only in segments whose ``hi`` reaches the batch's windows
        # (none for live events), instead of decoding every segment of the hour. The default (the
        # largest integer: "any window of its hour") keeps older segments always looked in. Indexed
        # with the hour: one probe tells whether an hour holds a segment as new as a batch.
        "ALTER TABLE event_segments ADD COLUMN hi INTEGER NOT NULL DEFAULT 9223372036854775807",
        "DROP INDEX event_segments_hour",
        "CREATE INDEX event_segments_hour ON event_segments (hour, hi)",
    ]),
]  # fmt: skip


def _private_database(path: Path) -> None:
    """The database holds password hashes, the audit log and the unsuppressed cube (issue 17): 0600.

    A folder made here is 0700; the file is created 0600 before SQLite opens it, and SQLite gives its
    -wal and -shm files the database's own mode. A database made world-readable by an older hub is
    narrowed when its owner opens it.
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
        path.parent.chmod(0o700)  # the umask may have narrowed it further, never widened: set it
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if file.exists() and file.stat().st_uid == os.getuid() and file.stat().st_mode & 0o077:
                file.chmod(0o600)
        except FileNotFoundError:  # the journal went away between the two calls: nothing to narrow
            pass


class SQLiteStore(SqlStore):
    """One connection guarded by a lock (SQLite has one writer anyway)."""

    backend = "sqlite"
    _begin = "BEGIN IMMEDIATE"

    def __init__(
        self, path: Path | str, *, migrations: list[tuple[int, list[Migration]]] | None = None
    ) -> None:
        super().__init__()
        self.path = str(path)
        if self.path != ":memory:":
            _private_database(Path(self.path))
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed batch survives power loss too, not only a crash of the process.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate(MIGRATIONS if migrations is None else migrations)

    def _migrate(self, migrations: list[tuple[int, list[Migration]]]) -> None:
        with self._tx() as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at REAL)"
            )
            current = cur.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
            for version, statements in migrations:
                if version > current:
                    for statement in statements:
                        if callable(statement):
                            statement(self, cur)
                        else:
                            cur.execute(statement)
                    cur.execute("INSERT INTO schema_version VALUES (?, julianday('now'))", (version,))
