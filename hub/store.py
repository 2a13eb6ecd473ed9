"""The hub's event store: SQLite in WAL mode (the embedded default).

Writes are idempotent on the event id, so a QoS 1 redelivery never makes a
second row. The :class:`Store` protocol is what the API and the ingest use;
a PostgreSQL backend will sit behind the same protocol.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vigie import wire

__all__ = ["EventQuery", "QuarantineRecord", "SQLiteStore", "Store"]

#: Bytes of a quarantined payload that are kept for the operator to inspect.
QUARANTINE_KEEP_BYTES = 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    site TEXT NOT NULL,
    device TEXT NOT NULL,
    kind TEXT NOT NULL,
    place TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    window_s INTEGER NOT NULL,
    body TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_window ON events (window_start);
CREATE INDEX IF NOT EXISTS events_device ON events (site, device, window_start);
CREATE TABLE IF NOT EXISTS devices (
    site TEXT NOT NULL,
    device TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    status TEXT,
    status_ts INTEGER,
    heartbeat TEXT,
    events INTEGER NOT NULL DEFAULT 0,
    quarantined INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (site, device)
);
CREATE TABLE IF NOT EXISTS quarantine (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    topic TEXT NOT NULL,
    site TEXT,
    device TEXT,
    field TEXT NOT NULL,
    reason TEXT NOT NULL,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
"""
SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters for listing events; ``cursor`` is the last ``seq`` of the previous page."""

    site: str | None = None
    device: str | None = None
    kind: str | None = None
    place: str | None = None
    since: int | None = None
    until: int | None = None
    limit: int = 100
    cursor: int | None = None


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    """A message that failed validation, kept for the operator."""

    topic: str
    site: str | None
    device: str | None
    field: str
    reason: str
    payload: bytes
    received_at: float


class Store(Protocol):
    """What the ingest and the API need from a storage backend."""

    def add_events(self, events: Sequence[wire.Event], received_at: float) -> int:
        """Insert events, ignoring ids already stored; returns how many were new."""
        ...

    def record_heartbeat(self, beat: wire.Heartbeat, received_at: float) -> None: ...
    def record_status(self, status: wire.Status, received_at: float) -> None: ...
    def quarantine(self, records: Sequence[QuarantineRecord]) -> None: ...
    def list_events(self, query: EventQuery) -> tuple[list[dict[str, Any]], int | None]: ...
    def list_devices(self) -> list[dict[str, Any]]: ...
    def list_quarantine(self, limit: int = 100) -> list[dict[str, Any]]: ...
    def ping(self) -> bool: ...
    def close(self) -> None: ...


def _index_columns(e: wire.Event) -> tuple[str, str, str, str, str, int, int]:
    """(id, site, device, kind, place, window start, window length) of any event kind."""
    if isinstance(e, wire.Alert):
        return (e.id, e.site, e.device, e.kind, e.zone or e.line or "", e.ts, wire.ALERT_GRANULARITY_S)
    place = e.zone if isinstance(e, wire.ZoneCountEvent) else e.line
    return (e.id, e.site, e.device, e.kind, place, e.window_start, e.window_s)


class SQLiteStore:
    """SQLite backend; one connection guarded by a lock (SQLite has one writer anyway)."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable across process crashes in WAL mode; FULL adds power-loss safety.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        with self._lock:
            self._db.executescript(_SCHEMA)
            if self._db.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 0:
                self._db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))

    # -- writes -----------------------------------------------------------------------
    def add_events(self, events: Sequence[wire.Event], received_at: float) -> int:
        if not events:
            return 0
        rows = [(*_index_columns(e), e.model_dump_json(), received_at) for e in events]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                before = self._db.total_changes
                self._db.executemany(
                    "INSERT OR IGNORE INTO events (id, site, device, kind, place, window_start,"
                    " window_s, body, received_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    rows,
                )
                inserted = self._db.total_changes - before
                per_device: dict[tuple[str, str], int] = {}
                for e in events:
                    per_device[(e.site, e.device)] = per_device.get((e.site, e.device), 0) + 1
                for (site, device), n in per_device.items():
                    self._touch(site, device, received_at, events=n)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return inserted

    def _touch(self, site: str, device: str, now: float, *, events: int = 0, quarantined: int = 0) -> None:
        self._db.execute(
            "INSERT INTO devices (site, device, first_seen, last_seen, events, quarantined)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT (site, device) DO UPDATE SET"
            " last_seen = max(last_seen, excluded.last_seen),"
            " events = events + excluded.events, quarantined = quarantined + excluded.quarantined",
            (site, device, now, now, events, quarantined),
        )

    def record_heartbeat(self, beat: wire.Heartbeat, received_at: float) -> None:
        with self._lock:
            self._touch(beat.site, beat.device, received_at)
            self._db.execute(
                "UPDATE devices SET heartbeat = ? WHERE site = ? AND device = ?",
                (beat.model_dump_json(), beat.site, beat.device),
            )

    def record_status(self, status: wire.Status, received_at: float) -> None:
        with self._lock:
            self._touch(status.site, status.device, received_at)
            # Retained and last-will messages can arrive out of order: keep the newest.
            self._db.execute(
                "UPDATE devices SET status = ?, status_ts = ? WHERE site = ? AND device = ?"
                " AND (status_ts IS NULL OR status_ts <= ?)",
                (status.state, status.ts, status.site, status.device, status.ts),
            )

    def quarantine(self, records: Sequence[QuarantineRecord]) -> None:
        if not records:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO quarantine (received_at, topic, site, device, field, reason, size, payload)"
                    " VALUES (?,?,?,?,?,?,?,?)",
                    [
                        (
                            r.received_at,
                            r.topic[:256],
                            r.site,
                            r.device,
                            r.field[:128],
                            r.reason[:512],
                            len(r.payload),
                            r.payload[:QUARANTINE_KEEP_BYTES],
                        )
                        for r in records
                    ],
                )
                for r in records:
                    if r.site and r.device:
                        self._touch(r.site, r.device, r.received_at, quarantined=1)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # -- reads ------------------------------------------------------------------------
    def list_events(self, query: EventQuery) -> tuple[list[dict[str, Any]], int | None]:
        where: list[str] = []
        args: list[str | int] = []
        filters = (
            ("site", query.site),
            ("device", query.device),
            ("kind", query.kind),
            ("place", query.place),
        )
        for column, value in filters:
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if query.since is not None:
            where.append("window_start >= ?")
            args.append(query.since)
        if query.until is not None:
            where.append("window_start < ?")
            args.append(query.until)
        if query.cursor is not None:
            where.append("seq < ?")
            args.append(query.cursor)
        sql = "SELECT * FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, query.limit + 1)).fetchall()
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        data = [{**json.loads(r["body"]), "received_at": r["received_at"]} for r in rows]
        return data, (int(rows[-1]["seq"]) if more and rows else None)

    def list_devices(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM devices ORDER BY site, device").fetchall()
        now = time.time()
        return [
            {
                "site": r["site"],
                "device": r["device"],
                "first_seen": r["first_seen"],
                "last_seen": r["last_seen"],
                "seconds_since_seen": round(now - r["last_seen"], 1),
                "status": r["status"],
                "events": r["events"],
                "quarantined": r["quarantined"],
                "heartbeat": json.loads(r["heartbeat"]) if r["heartbeat"] else None,
            }
            for r in rows
        ]

    def list_quarantine(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM quarantine ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [
            {
                "received_at": r["received_at"],
                "topic": r["topic"],
                "site": r["site"],
                "device": r["device"],
                "field": r["field"],
                "reason": r["reason"],
                "size": r["size"],
                "payload_hex": bytes(r["payload"]).hex(),
            }
            for r in rows
        ]

    def quarantine_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM quarantine").fetchone()[0])

    def ping(self) -> bool:
        with self._lock:
            return bool(self._db.execute("SELECT 1").fetchone()[0] == 1)

    def close(self) -> None:
        with self._lock:
            self._db.close()
