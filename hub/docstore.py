"""TinyDB on the project's own SQLite storage, for small document collections local to one host.

A few hundred to a few thousand documents that one host's operators edit, where TinyDB's query API
fits. State that several hub hosts share (OTA campaigns) lives in the SQL store instead
(``hub/storage``, docs/storage.md).

TinyDB's own JSON storage rewrites the whole file on each write (measured: 0.4 ms per insert when
empty, 437 ms at 50,000 documents), and `tinydb-sqlite` 0.1.2 rewrites whole tables and fails with
current TinyDB. This storage keeps one row per TinyDB table in SQLite (WAL), writes only the tables
that changed, in one transaction: a crash mid-write leaves the previous state, never a torn file.
TinyDB's own updates read the table, change it and write it back; two processes doing that at once
lose one's change (it happened to a campaign runner and an operator's `pause`, when campaigns were
TinyDB documents), so read-modify-write goes through :meth:`SQLiteStorage.transaction`, which holds
SQLite's write lock from the read to the write. Anything that grows with time (events, roll-ups,
quarantine, outbox) lives in SQL tables instead.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage

from vigie.exceptions import VigieError

__all__ = ["SQLiteStorage", "StaleWriteError", "open_documents", "transaction"]


class StaleWriteError(VigieError):
    """A write outside a transaction would overwrite what another process wrote since the read."""


class SQLiteStorage(Storage):
    """A TinyDB storage: table name → JSON document, one SQLite row per table."""

    def __init__(self, path: str | Path, **_: Any) -> None:
        # Re-entrant: a transaction holds it while TinyDB calls read() and write() inside.
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS tinydb_tables (name TEXT PRIMARY KEY, body TEXT NOT NULL)"
        )
        self._written: dict[str, str] = {}
        self._in_transaction = False
        # SQLite's data_version at our last read: it changes when another connection commits.
        self._read_version: int | None = None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything read and written inside is one SQLite transaction, exclusive of other writers.

        Other threads of this process wait on the lock; other processes wait on SQLite's
        (up to 30 s). On an exception nothing inside is written.
        """
        with self._lock:
            if self._in_transaction:  # nested: the outer one commits
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._in_transaction = True
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._written = {}  # what was "written" inside never reached the file
                raise
            finally:
                self._in_transaction = False

    def read(self) -> dict[str, dict[str, Any]] | None:
        with self._lock:
            rows = self._db.execute("SELECT name, body FROM tinydb_tables").fetchall()
            self._read_version = self._data_version()
            if not rows:
                return None
            self._written = {name: body for name, body in rows}
        return {name: json.loads(body) for name, body in rows}

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        # No sort_keys: TinyDB returns documents in the order of their keys here (insertion order).
        bodies = {name: json.dumps(table, separators=(",", ":")) for name, table in data.items()}
        with self.transaction():  # holds self._lock too
            if self._read_version is not None and self._data_version() != self._read_version:
                # Another process wrote after our read: writing now would undo its change.
                raise StaleWriteError(
                    "another process changed the document store between this read and this write;"
                    " wrap the read-modify-write in `with transaction(db):` (hub.docstore)"
                )
            changed = [(n, b) for n, b in bodies.items() if self._written.get(n) != b]
            gone = [(n,) for n in self._written if n not in bodies]
            if not changed and not gone:
                return
            self._db.executemany(
                "INSERT INTO tinydb_tables VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET body = excluded.body",
                changed,
            )
            self._db.executemany("DELETE FROM tinydb_tables WHERE name = ?", gone)
            self._written = bodies

    def _data_version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_documents(path: str | Path) -> TinyDB:
    """A TinyDB whose tables are stored in the SQLite file at ``path``."""
    return TinyDB(str(path), storage=SQLiteStorage)


def transaction(db: TinyDB) -> AbstractContextManager[None]:
    """``with transaction(db):`` makes the reads and writes inside atomic across processes."""
    storage = db.storage
    if not isinstance(storage, SQLiteStorage):
        raise TypeError(f"transaction() needs a database from open_documents(), not {type(storage).__name__}")
    return storage.transaction()
