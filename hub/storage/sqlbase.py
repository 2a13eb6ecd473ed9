"""The plumbing every SQL domain module shares: one connection, its lock, transactions and dialect.

Each domain (``events``, ``registry``, ``fusion``, ``access``, ``audit``, ``retention``,
``campaigns``) is a mixin over :class:`SqlBase`; ``sql.SqlStore`` joins them, and the backends
(``sqlite.py``, ``postgres.py``) supply the connection, the dialect and the migrations.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

__all__ = ["INSERT_CHUNK", "SqlBase", "iso"]

#: Rows per multi-row statement: one round trip per chunk, within SQLite's variable limit.
INSERT_CHUNK = 500


def iso(epoch: float) -> str:
    """An epoch as ``2026-12-01 23:05:26Z``, for messages to operators."""
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(epoch))


class SqlBase:
    """The shared connection; subclasses set ``backend``, ``_greatest``, ``_placeholder`` and ``_db``."""

    backend = "sql"
    _greatest = "max"  # the two-argument maximum: max() in SQLite, GREATEST() in PostgreSQL
    _placeholder = "?"
    # Row lock for a read-modify-write: SQLite's BEGIN IMMEDIATE already holds the database's
    # write lock from the first read, PostgreSQL needs FOR UPDATE on the rows read.
    _for_update = ""
    _begin = "BEGIN"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._db: Any = None

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

    @contextmanager
    def _statements(self) -> Iterator[Any]:
        """A cursor for statements each atomic on its own (autocommit), under the lock. PostgreSQL
        behind PgBouncer wraps them in a transaction: that is where its settings (the schema) are."""
        with self._lock:
            yield self._connection().cursor()

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            cur = self._db.cursor()
            cur.execute(self._sql(sql), tuple(args))
            rows = cur.fetchall()
            self._after_read()
            return list(rows)

    def _queries(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        """Several reads' rows; PostgreSQL sends them in one round trip (a pipeline)."""
        return [self._query(sql, args) for sql, args in statements]

    def _connection(self) -> Any:
        """The connection for statements outside ``_tx``/``_query`` (hold the lock): PostgreSQL
        connects a lost one again first."""
        return self._db

    def _after_read(self) -> None:
        """PostgreSQL ends the implicit read transaction here."""

    def _pipeline(self) -> AbstractContextManager[Any]:
        """PostgreSQL sends the statements in it without waiting for each result (psycopg's
        pipeline mode; a fetch waits for what it needs); SQLite runs them as they come."""
        return nullcontext()

    @staticmethod
    def _where(conditions: Sequence[tuple[str, Any]]) -> tuple[str, list[Any]]:
        """`` WHERE a AND b`` from (clause with one ?, value) pairs whose value is given."""
        given = [(clause, value) for clause, value in conditions if value is not None]
        if not given:
            return "", []
        return " WHERE " + " AND ".join(c for c, _ in given), [v for _, v in given]

    def schema_version(self) -> int:
        return int(self._query("SELECT max(version) FROM schema_version")[0][0])

    def ping(self) -> bool:
        return bool(self._query("SELECT 1")[0][0] == 1)

    def close(self) -> None:
        with self._lock:
            self._db.close()
