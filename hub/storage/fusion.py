"""City data fusion (``hub/fusion``): the zone × hour × source × category cube, imports, model state
and anomalies."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from hub.storage.base import CubeQuery, CubeRow
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
        """Insert cube rows; an existing (zone, hour, source, category) gets ``n = new_n``."""
        values = [(r.zone, r.hour, r.source, r.category, r.n, r.span_h) for r in rows]
        sql = self._sql(
            "INSERT INTO cube (zone, hour, source, category, n, span_h) VALUES (?,?,?,?,?,?)"
            f" ON CONFLICT (zone, hour, source, category) DO UPDATE SET n = {new_n}"
        )
        for i in range(0, len(values), INSERT_CHUNK):
            cur.executemany(sql, values[i : i + INSERT_CHUNK])

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

    def query_cube(self, query: CubeQuery) -> list[dict[str, Any]]:
        where: list[str] = []
        args: list[Any] = []
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
        if query.start is not None:
            where.append("hour >= ?")
            args.append(query.start)
        if query.end is not None:
            where.append("hour < ?")
            args.append(query.end)
        sql = "SELECT zone, hour, source, category, n, span_h FROM cube"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY hour, zone, source, category LIMIT ?"
        rows = self._query(sql, (*args, query.limit))
        return [{"zone": r[0], "hour": int(r[1]), "source": r[2], "category": r[3], "n": float(r[4]),
                 "span_h": int(r[5])} for r in rows]  # fmt: skip

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
        self, start: int | None = None, end: int | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT zone, hour, source, category, observed, expected, p FROM anomalies"
            " WHERE hour >= ? AND hour < ? ORDER BY hour DESC, p LIMIT ?",
            (start if start is not None else 0, end if end is not None else 2**62, limit),
        )
        keys = ("zone", "hour", "source", "category", "observed", "expected", "p")
        return [dict(zip(keys, r, strict=True)) for r in rows]
