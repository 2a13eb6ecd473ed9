"""Durable outbox: every event is on disk before it is offered to the broker.

A row leaves the outbox only when the broker has acknowledged it (QoS 1
PUBACK). A crash at any point therefore loses nothing; a crash between the
broker's ack and the row's deletion resends the row, and the hub drops the
duplicate by its event id. SQLite in WAL mode with ``synchronous=FULL`` makes
each committed ``put`` survive power loss.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Outbox", "OutboxItem"]


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One message waiting for the broker."""

    rowid: int
    topic: str
    payload: bytes
    qos: int


#: Bookkeeping bytes per row on top of the payload (rowid, topic, index), for the quota.
ROW_OVERHEAD = 96


class Outbox:
    """A FIFO of (topic, payload, qos) on SQLite, safe to share between threads.

    With a quota, the oldest rows are dropped once the stored bytes exceed it,
    and the number dropped is kept (across restarts) for the heartbeat: on a
    box that has been cut off for weeks, recent data is worth more than old.
    """

    def __init__(self, path: Path | str, *, quota_bytes: int | None = None) -> None:
        self.path = str(path)
        self.quota_bytes = quota_bytes
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            " rowid INTEGER PRIMARY KEY AUTOINCREMENT,"
            " topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL,"
            " created REAL NOT NULL DEFAULT (julianday('now')))"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        row = self._db.execute(
            "SELECT count(*), coalesce(sum(length(payload) + length(topic)), 0) FROM outbox"
        ).fetchone()
        self._bytes = int(row[1]) + ROW_OVERHEAD * int(row[0])

    def put_many(self, items: Iterable[tuple[str, bytes, int]]) -> int:
        """Append messages in one transaction; returns how many were written."""
        rows = list(items)
        if not rows:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT INTO outbox (topic, payload, qos) VALUES (?, ?, ?)", rows)
                self._bytes += sum(len(p) + len(t) + ROW_OVERHEAD for t, p, _ in rows)
                if self.quota_bytes is not None and self._bytes > self.quota_bytes:
                    self._enforce_quota()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(rows)

    def _enforce_quota(self) -> None:
        # Inside the caller's transaction: the drop and its count commit together.
        assert self.quota_bytes is not None
        dropped = 0
        while self._bytes > self.quota_bytes:
            oldest = self._db.execute(
                "SELECT rowid, length(payload) + length(topic) FROM outbox ORDER BY rowid LIMIT 256"
            ).fetchall()
            if not oldest:
                break
            cut: list[tuple[int]] = []
            for rowid, size in oldest:
                if self._bytes <= self.quota_bytes:
                    break
                cut.append((rowid,))
                self._bytes -= size + ROW_OVERHEAD
            self._db.executemany("DELETE FROM outbox WHERE rowid = ?", cut)
            dropped += len(cut)
        self._db.execute(
            "INSERT INTO meta VALUES ('dropped', ?)"
            " ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
            (dropped,),
        )

    def dropped(self) -> int:
        """Messages dropped to keep the quota, since the outbox was created."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
        return int(row[0]) if row else 0

    def put(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Append one message durably."""
        self.put_many([(topic, payload, qos)])

    def peek(self, limit: int, exclude: Sequence[int] = ()) -> list[OutboxItem]:
        """Oldest messages first, skipping those already in flight."""
        if limit <= 0:
            return []
        with self._lock:
            if exclude:
                marks = ",".join("?" * len(exclude))
                cur = self._db.execute(
                    f"SELECT rowid, topic, payload, qos FROM outbox WHERE rowid NOT IN ({marks})"  # noqa: S608 (placeholders only)
                    " ORDER BY rowid LIMIT ?",
                    (*exclude, limit),
                )
            else:
                cur = self._db.execute(
                    "SELECT rowid, topic, payload, qos FROM outbox ORDER BY rowid LIMIT ?", (limit,)
                )
            return [OutboxItem(r[0], r[1], bytes(r[2]), r[3]) for r in cur.fetchall()]

    def ack(self, rowids: Iterable[int]) -> None:
        """Forget messages the broker has acknowledged."""
        ids = [(r,) for r in rowids]
        if not ids:
            return
        with self._lock:
            for (rowid,) in ids:
                cur = self._db.execute(
                    "DELETE FROM outbox WHERE rowid = ? RETURNING length(payload) + length(topic)", (rowid,)
                )
                row = cur.fetchone()
                if row is not None:
                    self._bytes -= int(row[0]) + ROW_OVERHEAD

    def depth(self) -> int:
        """How many messages wait for the broker."""
        with self._lock:
            row = self._db.execute("SELECT count(*) FROM outbox").fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
