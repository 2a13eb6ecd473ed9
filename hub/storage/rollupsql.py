"""Reading hourly roll-ups in keyset pages, and keeping their table from bloating.

The roll-ups are written at ingest (``events.py``, in the events' own transaction); each
batch updates rows in place, so on PostgreSQL every upsert leaves a dead tuple behind.
Migration 12 gives the table room for HOT updates (``fillfactor``) and its own autovacuum
thresholds, and :meth:`RollupSql.maintain_rollups` vacuums it explicitly (the hub's periodic
job, after each purge): none of it depends on the server's defaults.
"""

from __future__ import annotations

from hub.storage.base import Page, RollupKey, RollupQuery
from hub.storage.sqlbase import SqlBase

__all__ = ["RollupSql"]


class RollupSql(SqlBase):
    """The analysts' hourly series, a page at a time."""

    def list_rollups(self, query: RollupQuery) -> Page[RollupKey]:
        metric = query.metric
        prefix = metric is not None and metric.endswith("*")
        where, args = self._where([
            ("site = ?", query.site), ("device = ?", query.device), ("place = ?", query.place),
            ("metric LIKE ?" if prefix else "metric = ?",
             (metric[:-1].replace("%", "") + "%") if prefix and metric else metric),
            # One lower bound on the hour, the later of since and the cursor's (see fusion.query_cube).
            ("hour >= ?", query.since if query.after is None else max(query.since or 0, query.after[0])),
            ("hour < ?", query.until),
        ])  # fmt: skip
        if query.after is not None:  # keyset paging, in the ORDER BY's own order
            where += (
                " AND " if where else " WHERE "
            ) + "(hour, site, device, place, metric) > (?, ?, ?, ?, ?)"
            args = [*args, *query.after]
        # One row past the page says whether another page follows.
        rows = self._query(
            f"SELECT hour, site, device, place, metric, n, total, max FROM rollups{where}"
            " ORDER BY hour, site, device, place, metric LIMIT ?",
            (*args, query.limit + 1),
        )
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        data = [
            {"hour": int(r[0]), "site": r[1], "device": r[2], "place": r[3], "metric": r[4], "n": r[5],
             "total": r[6], "max": r[7], "mean": round(r[6] / r[5], 3) if r[5] else 0.0}
            for r in rows
        ]  # fmt: skip
        last = rows[-1] if rows else None
        key = (int(last[0]), last[1], last[2], last[3], last[4]) if more and last is not None else None
        return Page(data, key)

    def maintain_rollups(self) -> None:
        """Reclaim the dead rows the upserts left and refresh the planner's statistics."""
        with self._lock:
            # VACUUM cannot run inside a transaction: each backend's connection is in autocommit here.
            self._db.execute(self._vacuum_rollups)

    # SQLite updates rows in place and reuses freed pages itself: statistics only, and only where
    # SQLite finds them stale (a plain ANALYZE would scan the whole table under the write lock).
    _vacuum_rollups = "PRAGMA optimize"
