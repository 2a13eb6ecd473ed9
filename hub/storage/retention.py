"""Retention: deleting what the policy says is too old, and the record of each purge."""

from __future__ import annotations

import json
from typing import Any

from hub.storage.base import Retention
from hub.storage.sqlbase import SqlBase

__all__ = ["DAY", "RetentionSql"]

DAY = 86_400


class RetentionSql(SqlBase):
    """PostgreSQL overrides ``_purge_segments`` to drop whole monthly partitions."""

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
        """Hot rows older than the cut-off, and the segments of the hours that ended before it.

        Segments go by whole hours: the events of the hour holding the cut-off are kept until a
        purge after that hour's end (at most an hour past the policy, with the hourly purge).
        """
        cur.execute(self._sql("DELETE FROM events_hot WHERE window_start < ?"), (cutoff,))
        removed = max(int(cur.rowcount), 0)
        return removed + self._purge_segments(cur, cutoff - cutoff % 3600)

    def _purge_segments(self, cur: Any, before_hour: int) -> int:
        cur.execute(
            self._sql("SELECT coalesce(sum(n), 0) FROM event_segments WHERE hour < ?"), (before_hour,)
        )
        removed = int(cur.fetchone()[0])
        cur.execute(self._sql("DELETE FROM event_segments WHERE hour < ?"), (before_hour,))
        return removed

    def list_purges(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT ran_at, events, rollups, quarantine, policy FROM purges ORDER BY ran_at DESC LIMIT ?",
            (limit,),
        )
        return [
            {"ran_at": r[0], "events": r[1], "rollups": r[2], "quarantine": r[3], "policy": json.loads(r[4])}
            for r in rows
        ]
