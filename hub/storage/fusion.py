"""City data fusion (``hub/fusion``): the zone × hour × source × category cube, imports, model state
and anomalies."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from hub.storage.base import AnomalyKey, CubeKey, CubeQuery, CubeRow, Page
from hub.storage.cubelevels import UTC, LevelKey, level_deltas
from hub.storage.sqlbase import INSERT_CHUNK, SqlBase

__all__ = ["FusionSql"]


class FusionSql(SqlBase):
    """What the fusion's imports, learning and API store and read."""

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
        """Insert cube rows; an existing (zone, hour, source, category) gets ``n = new_n``.

        The day, week and month sums (``cube_levels``) move by what each hour really changed,
        in the same transaction: a replaced hour first reads the count it replaces.
        """
        replacing = new_n == "excluded.n"
        values = [(r.zone, r.hour, r.source, r.category, r.n, r.span_h) for r in rows]
        sql = self._sql(
            "INSERT INTO cube (zone, hour, source, category, n, span_h) VALUES (?,?,?,?,?,?)"
            f" ON CONFLICT (zone, hour, source, category) DO UPDATE SET n = {new_n}"
        )
        changes: list[tuple[str, int, str, str, float]] = []
        for i in range(0, len(values), INSERT_CHUNK):
            chunk = values[i : i + INSERT_CHUNK]
            current = self._cube_counts(cur, [v[:4] for v in chunk]) if replacing else {}
            for zone, hour, source, category, n, _ in chunk:
                key = (zone, hour, source, category)
                before = current.get(key, 0.0)
                current[key] = n if replacing else before + n
                changes.append((zone, hour, source, category, current[key] - before))
            cur.executemany(sql, chunk)
        self._add_levels(cur, level_deltas(changes))

    def _cube_counts(
        self, cur: Any, keys: Sequence[tuple[str, int, str, str]]
    ) -> dict[tuple[str, int, str, str], float]:
        """The stored n of these cube keys (absent keys left out)."""
        unique = sorted(set(keys))
        if not unique:
            return {}
        cur.execute(
            self._sql(
                "SELECT zone, hour, source, category, n FROM cube WHERE (zone, hour, source, category) IN"
                f" (VALUES {','.join(['(?,?,?,?)'] * len(unique))})"
            ),
            [v for key in unique for v in key],
        )
        return {(r[0], int(r[1]), r[2], r[3]): float(r[4]) for r in cur.fetchall()}

    def _add_levels(self, cur: Any, deltas: dict[LevelKey, float]) -> None:
        # Sorted keys: two writers lock the same rows in the same order (no deadlock).
        items = sorted(deltas.items())
        for i in range(0, len(items), INSERT_CHUNK):
            chunk = items[i : i + INSERT_CHUNK]
            cur.execute(
                self._sql(
                    "INSERT INTO cube_levels (level, start, zone, source, category, n) VALUES "
                    + ",".join(["(?,?,?,?,?,?)"] * len(chunk))
                    + " ON CONFLICT (level, start, zone, source, category)"
                    " DO UPDATE SET n = cube_levels.n + excluded.n"
                ),
                [v for key, dn in chunk for v in (*key, dn)],
            )

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

    def query_cube(self, query: CubeQuery) -> Page[CubeKey]:
        hourly = query.level == "hour"
        time_col = "hour" if hourly else "start"
        where: list[str] = [] if hourly else ["level = ?"]
        args: list[Any] = [] if hourly else [query.level]
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
        # One lower bound on time, the later of start and the cursor's: SQLite walks its index from the
        # first bound it finds, and from the range's start every later page cost more (quadratic walks).
        low = query.start if query.after is None else max(query.start or 0, query.after[0])
        if low is not None:
            where.append(f"{time_col} >= ?")
            args.append(low)
        if query.end is not None:
            where.append(f"{time_col} < ?")
            args.append(query.end)
        if query.after is not None:  # keyset paging, in the ORDER BY's own order
            where.append(f"({time_col}, zone, source, category) > (?, ?, ?, ?)")
            args.extend(query.after)
        span = "span_h" if hourly else "0"
        sql = (
            f"SELECT zone, {time_col}, source, category, n, {span} FROM {'cube' if hourly else 'cube_levels'}"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        # One row past the page says whether another page follows.
        sql += f" ORDER BY {time_col}, zone, source, category LIMIT ?"
        rows = self._query(sql, (*args, query.limit + 1))
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        spans: dict[int, int] = {}  # a bucket's length in hours, computed once per bucket of the page
        for r in rows:
            if not hourly and int(r[1]) not in spans:
                spans[int(r[1])] = (UTC.end(int(r[1]), query.level) - int(r[1])) // 3600
        data = [{"zone": r[0], "hour": int(r[1]), "source": r[2], "category": r[3], "n": float(r[4]),
                 "span_h": int(r[5]) if hourly else spans[int(r[1])]}
                for r in rows]  # fmt: skip
        last = data[-1] if more and data else None
        key = (last["hour"], last["zone"], last["source"], last["category"]) if last else None
        return Page(data, key)

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
        self,
        start: int | None = None,
        end: int | None = None,
        limit: int = 1000,
        after: AnomalyKey | None = None,
    ) -> Page[AnomalyKey]:
        where = "hour >= ? AND hour < ?"
        high = end if end is not None else 2**62
        if after is not None:  # one upper bound on the hour, the cursor's if it is earlier (an index range)
            high = min(high, after[0] + 1)
        args: list[Any] = [start if start is not None else 0, high]
        if after is not None:  # keyset paging: hour descending, then (p, zone, source, category) ascending
            where += " AND (hour < ? OR (hour = ? AND (p, zone, source, category) > (?, ?, ?, ?)))"
            args += [after[0], *after]
        rows = self._query(
            "SELECT zone, hour, source, category, observed, expected, p FROM anomalies"
            f" WHERE {where} ORDER BY hour DESC, p, zone, source, category LIMIT ?",
            (*args, limit + 1),
        )
        more = len(rows) > limit
        keys = ("zone", "hour", "source", "category", "observed", "expected", "p")
        data = [dict(zip(keys, r, strict=True)) for r in rows[:limit]]
        last = data[-1] if more and data else None
        key = (
            (int(last["hour"]), float(last["p"]), last["zone"], last["source"], last["category"])
            if last
            else None
        )
        return Page(data, key)
