"""Durable outbox: every event is on disk before it is offered to the broker.

A row leaves the outbox only when the hub's *receipt* names it (or, for a
message without an id, when the broker has acknowledged it with a PUBACK).
The broker's PUBACK alone is not enough: Mosquitto keeps its queues in memory
and drops messages when a queue is full or the broker is killed, after having
acknowledged them. So a row the broker acknowledged is only marked ``sent``;
one that no receipt confirms in time is sent again, and the hub drops the
duplicate by its event id. A crash at any point therefore loses nothing.
SQLite in WAL mode with ``synchronous=FULL`` makes each committed ``put``
survive power loss.

Space is bounded twice: by the quota (oldest rows dropped and counted, since
on a box cut off for weeks recent data is worth more than old) and by the
disk itself: when the file system is full, new rows wait in a bounded memory
spill and are written as soon as there is room again.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Outbox", "OutboxItem"]

log = logging.getLogger(__name__)

#: A message to store: (topic, payload, qos) or (topic, payload, qos, event id awaiting a receipt).
Row = tuple[str, bytes, int] | tuple[str, bytes, int, str | None]


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One message waiting for the broker (or, once sent, for the hub's receipt)."""

    rowid: int
    topic: str
    payload: bytes
    qos: int
    msg_id: str | None = None
    sent: float | None = None  # when the broker acknowledged it (monotonic clock); None if never sent


#: Bookkeeping bytes per row on top of the payload (rowid, topic, index), for the quota.
ROW_OVERHEAD = 96
#: Rows held in memory while the disk is full; beyond it the oldest are dropped and counted.
SPILL_ROWS = 10_000


def _disk_full(exc: sqlite3.Error) -> bool:
    return "full" in str(exc).lower() or getattr(exc, "sqlite_errorcode", None) == 13  # SQLITE_FULL


class Outbox:
    """A FIFO of messages on SQLite, safe to share between threads.

    Args:
        path: the database file.
        quota_bytes: most bytes of stored messages; the oldest go beyond it (counted).
        disk_reserve_bytes: free space to leave on the file system; under it, the
            outbox drops its oldest rows instead of growing (SQLite needs room to
            delete too, so waiting for the disk to be full would be too late).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        quota_bytes: int | None = None,
        disk_reserve_bytes: int = 2_000_000,
    ) -> None:
        self.path = str(path)
        self.quota_bytes = quota_bytes
        self.disk_reserve_bytes = disk_reserve_bytes
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._spill: collections.deque[tuple[str, bytes, int, str | None]] = collections.deque()
        self._spill_dropped = 0
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # Keep the WAL small: on a Pi's SD card, and in a nearly full file system.
        self._db.execute("PRAGMA wal_autocheckpoint=64")
        self._db.execute("PRAGMA journal_size_limit=1048576")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            " rowid INTEGER PRIMARY KEY AUTOINCREMENT,"
            " topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL,"
            " created REAL NOT NULL DEFAULT (julianday('now')), msg_id TEXT, sent REAL)"
        )
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(outbox)")}
        for column, kind in (("msg_id", "TEXT"), ("sent", "REAL")):  # outboxes written by 0.1
            if column not in columns:
                self._db.execute(f"ALTER TABLE outbox ADD COLUMN {column} {kind}")
        self._db.execute("CREATE INDEX IF NOT EXISTS outbox_msg_id ON outbox (msg_id)")
        # `sent` is the sender's monotonic clock (wall time jumps with NTP and skewed RTCs),
        # meaningless in another process: what was sent before a restart is sent again at
        # once, and the hub drops whatever it already had.
        self._db.execute("UPDATE outbox SET sent = NULL WHERE sent IS NOT NULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        row = self._db.execute(
            "SELECT count(*), coalesce(sum(length(payload) + length(topic)), 0) FROM outbox"
        ).fetchone()
        self._bytes = int(row[1]) + ROW_OVERHEAD * int(row[0])

    # -- writing ----------------------------------------------------------------------
    def put_many(self, items: Iterable[Row]) -> int:
        """Append messages in one transaction; returns how many were taken.

        When the file system is full they wait in memory (bounded) and are
        written by the next call that finds room: the caller never loses an
        event to an exception here.
        """
        rows = [(r[0], r[1], r[2], r[3] if len(r) > 3 else None) for r in items]
        if not rows:
            return 0
        with self._lock:
            self._spill.extend(rows)
            self._flush_spill()
        return len(rows)

    def put(self, topic: str, payload: bytes, qos: int = 1, msg_id: str | None = None) -> None:
        """Append one message durably."""
        self.put_many([(topic, payload, qos, msg_id)])

    def _flush_spill(self) -> None:
        # Under self._lock.
        if not self._spill:
            return
        rows = list(self._spill)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO outbox (topic, payload, qos, msg_id) VALUES (?, ?, ?, ?)", rows
                )
                self._bytes += sum(len(p) + len(t) + ROW_OVERHEAD for t, p, _, _ in rows)
                self._enforce_limits(self._spill_dropped)
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back by itself (SQLITE_FULL does).
                with contextlib.suppress(sqlite3.OperationalError):
                    self._db.execute("ROLLBACK")
                self._bytes -= sum(len(p) + len(t) + ROW_OVERHEAD for t, p, _, _ in rows)
                raise
        except sqlite3.OperationalError as exc:
            if not _disk_full(exc):
                raise
            over = len(self._spill) - SPILL_ROWS
            for _ in range(max(over, 0)):
                self._spill.popleft()
                self._spill_dropped += 1
            log.warning(
                "disk full: events wait in memory until there is room",
                extra={"path": self.path, "in_memory": len(self._spill), "dropped": self._spill_dropped},
            )
            return
        self._spill.clear()
        self._spill_dropped = 0

    def _limit(self) -> int | None:
        """Bytes the stored rows may take now: the quota, or less when the disk runs out."""
        limit = self.quota_bytes
        if self.path != ":memory:" and self.disk_reserve_bytes:
            try:
                st = os.statvfs(Path(self.path).parent)
            except OSError:
                return limit
            # Deleted rows free pages inside the file, not on the disk: count those as room too.
            free_pages = self._db.execute("PRAGMA freelist_count").fetchone()[0]
            page = self._db.execute("PRAGMA page_size").fetchone()[0]
            room = self._bytes + st.f_bavail * st.f_frsize + free_pages * page - self.disk_reserve_bytes
            limit = room if limit is None else min(limit, room)
        return limit

    def _enforce_limits(self, already_dropped: int = 0) -> None:
        # Inside the caller's transaction: the drop and its count commit together.
        limit = self._limit()
        dropped = already_dropped
        while limit is not None and self._bytes > limit:
            oldest = self._db.execute(
                "SELECT rowid, length(payload) + length(topic) FROM outbox ORDER BY rowid LIMIT 256"
            ).fetchall()
            if not oldest:
                break
            cut: list[tuple[int]] = []
            for rowid, size in oldest:
                if self._bytes <= limit:
                    break
                cut.append((rowid,))
                self._bytes -= size + ROW_OVERHEAD
            self._db.executemany("DELETE FROM outbox WHERE rowid = ?", cut)
            dropped += len(cut)
        if dropped:
            self._db.execute(
                "INSERT INTO meta VALUES ('dropped', ?)"
                " ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
                (dropped,),
            )

    # -- reading and acknowledging --------------------------------------------------------
    def dropped(self) -> int:
        """Messages dropped to keep the quota or the disk reserve, since the outbox was created."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
            return (int(row[0]) if row else 0) + self._spill_dropped

    def produced(self) -> int:
        """Messages ever put in this outbox (SQLite's AUTOINCREMENT counter), plus those in memory."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
            return (int(row[0]) if row else 0) + len(self._spill) + self._spill_dropped

    def peek(
        self, limit: int, exclude: Sequence[int] = (), *, resend_before: float | None = None
    ) -> list[OutboxItem]:
        """Oldest messages first: never sent, or sent before ``resend_before`` with no receipt yet.

        Rows in ``exclude`` (in flight) are skipped.
        """
        if limit <= 0:
            return []
        with self._lock:
            self._flush_spill()
            where = "sent IS NULL" if resend_before is None else "(sent IS NULL OR sent < ?)"
            args: list[object] = [] if resend_before is None else [resend_before]
            if exclude:
                where += f" AND rowid NOT IN ({','.join('?' * len(exclude))})"
                args += list(exclude)
            cur = self._db.execute(
                f"SELECT rowid, topic, payload, qos, msg_id, sent FROM outbox WHERE {where}"  # noqa: S608 (placeholders only)
                " ORDER BY rowid LIMIT ?",
                (*args, limit),
            )
            return [OutboxItem(r[0], r[1], bytes(r[2]), r[3], r[4], r[5]) for r in cur.fetchall()]

    def ack(self, rowids: Iterable[int]) -> None:
        """Forget messages outright (the broker has them and no receipt is expected)."""
        with self._transaction():
            for rowid in rowids:
                self._delete("rowid = ?", rowid)

    def mark_sent(self, rowids: Iterable[int], at: float) -> None:
        """The broker has these: rows with an event id now wait for the hub's receipt, others go."""
        ids = list(rowids)
        with self._transaction():
            self._db.executemany("UPDATE outbox SET sent = ? WHERE rowid = ?", [(at, r) for r in ids])
            for rowid in ids:
                self._delete("rowid = ? AND msg_id IS NULL", rowid)

    def confirm(self, msg_ids: Iterable[str]) -> int:
        """Forget the events the hub's receipt names; returns how many rows that removed."""
        with self._transaction():
            return sum(self._delete("msg_id = ?", m) for m in msg_ids)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.OperationalError):
                    self._db.execute("ROLLBACK")
                raise

    def _delete(self, where: str, value: object) -> int:
        """Delete the rows matching ``where`` (one placeholder), keeping the byte count; how many went."""
        sizes = self._db.execute(
            f"DELETE FROM outbox WHERE {where} RETURNING length(payload) + length(topic)",  # noqa: S608 (constant clauses)
            (value,),
        ).fetchall()
        self._bytes -= sum(int(size) + ROW_OVERHEAD for (size,) in sizes)
        return len(sizes)

    def depth(self) -> int:
        """How many messages the hub has not confirmed yet (on disk and in memory)."""
        with self._lock:
            row = self._db.execute("SELECT count(*) FROM outbox").fetchone()
            return int(row[0]) + len(self._spill)

    def awaiting_receipt(self) -> int:
        """How many messages the broker has but the hub has not confirmed."""
        with self._lock:
            row = self._db.execute("SELECT count(*) FROM outbox WHERE sent IS NOT NULL").fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
