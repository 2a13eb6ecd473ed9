"""Throttling state shared by every hub process (issue 17): login attempts per address and per account.

One row per key, the state a small JSON document beside the time after which it can be forgotten.
A change is a read-modify-write that holds the row from the read to the write (``FOR UPDATE`` on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so N uvicorn workers, or N hub hosts on one database,
count attempts as one process would. The decisions themselves are pure (``hub/login_guard.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hub.storage.sqlbase import SqlBase

__all__ = ["PURGE_EVERY", "ThrottleSql"]

#: Every this many writes, one process deletes the rows whose state has expired (bounded table).
PURGE_EVERY = 256


class ThrottleSql(SqlBase):
    """The ``throttle`` table."""

    _throttle_writes = 0

    def update_throttle(
        self,
        key: str,
        change: Callable[[dict[str, Any] | None], tuple[dict[str, Any], float]],
        now: float,
    ) -> dict[str, Any]:
        # The row exists before it is locked: two processes seeing "no row" would both insert.
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO throttle (name, state, expires_at) VALUES (?, '{}', 0)"
                    " ON CONFLICT (name) DO NOTHING"
                ),
                (key,),
            )
            cur.execute(
                self._sql("SELECT state, expires_at FROM throttle WHERE name = ?" + self._for_update), (key,)
            )
            text, expires_at = cur.fetchone()
            state, until = change(json.loads(text) if expires_at > now else None)
            cur.execute(
                self._sql("UPDATE throttle SET state = ?, expires_at = ? WHERE name = ?"),
                (json.dumps(state), until, key),
            )
            self._throttle_writes += 1
            if self._throttle_writes % PURGE_EVERY == 0:
                cur.execute(self._sql("DELETE FROM throttle WHERE expires_at < ?"), (now,))
        return state

    def get_throttle(self, key: str, now: float) -> dict[str, Any] | None:
        rows = self._query("SELECT state FROM throttle WHERE name = ? AND expires_at > ?", (key, now))
        return dict(json.loads(rows[0][0])) if rows else None

    def count_throttle(self) -> int:
        return int(self._query("SELECT count(*) FROM throttle")[0][0])
