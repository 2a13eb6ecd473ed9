"""Token buckets shared by every hub process (issue 22): API tokens' and devices' rate limits.

A bucket is kept as one number, the time at which it is full again (``full_at``; the "theoretical
arrival time" of GCRA): at ``now`` it holds ``burst - max(0, full_at - now) * rate`` tokens, which is
the classic bucket (``rate`` a second, capped at ``burst``) without a second column to keep in step.
A row whose ``full_at`` has passed is a full bucket, the same as no row, so old rows can be deleted
whatever the rate of the limiter that wrote them.

One decision is one statement for any number of keys (an ingest batch's devices): an upsert that
computes from the row it locks (PostgreSQL's row lock; SQLite's single writer) and returns how many
tokens each key got. N uvicorn workers, N ingest workers or N hub hosts on one database therefore
take tokens from one bucket per key, as one process would.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from hub.storage.sqlbase import INSERT_CHUNK, SqlBase

__all__ = ["EPSILON", "PURGE_EVERY", "BucketSql", "PostgresBucketSql"]

#: Tokens forgiven to floating-point noise: ``full_at`` is an epoch (about 1.8e9 s, a resolution of
#: 2.4e-7 s), so a bucket computed to hold 0.99999 tokens holds one.
EPSILON = 1e-3
#: Every this many decisions, one process deletes the buckets that are full again (bounded table).
PURGE_EVERY = 1024


class BucketSql(SqlBase):
    """The ``buckets`` table."""

    _bucket_writes = 0

    def take_tokens(self, wanted: Mapping[str, int], rate: float, burst: int, now: float) -> dict[str, int]:
        if not wanted:
            return {}
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1 (got rate={rate}, burst={burst})")
        # Sorted: two workers lock the same keys in the same order (no deadlock between them).
        items = sorted((key, max(0, int(n))) for key, n in wanted.items())
        got: dict[str, int] = {}
        # Each statement is atomic on its own (autocommit) and keys are independent: no BEGIN/COMMIT
        # round trips around it (but behind PgBouncer, where the schema comes with a transaction).
        # One statement per INSERT_CHUNK keys (one for any real batch).
        with self._statements() as cur:
            for i in range(0, len(items), INSERT_CHUNK):
                got.update(self._take(cur, items[i : i + INSERT_CHUNK], rate, burst, now))
            self._bucket_writes += 1
            if self._bucket_writes % PURGE_EVERY == 0:
                cur.execute(self._sql("DELETE FROM buckets WHERE full_at < ?"), (now,))
        return got

    #: The bucket arithmetic in this dialect (SQLite: two-argument min/max; CAST truncates, which is
    #: floor for the non-negative values it gets).
    _least, _floor = "min", "CAST({} AS INTEGER)"

    def _upsert_tail(self) -> str:
        # A new row is a full bucket: it gives min(n, burst). An existing one gives what it holds
        # (floor(burst - (full_at - now) * rate), full_at not before now), at most the
        # min(n, burst) of the proposed row (``excluded.taken``), and moves full_at on by that much.
        # SET expressions all read the row as it was, so ``full_at`` and ``taken`` agree.
        base = f"{self._greatest}(buckets.full_at, :now)"
        held = self._floor.format(f"(:burst - ({base} - :now) * :rate + :eps)")
        taken = f"{self._least}(excluded.taken, {self._greatest}(0, {held}))"
        return (
            f" ON CONFLICT (name) DO UPDATE SET full_at = {base} + {taken} / :rate, taken = {taken}"
            " RETURNING name, taken"
        )

    def _take(
        self, cur: Any, items: list[tuple[str, int]], rate: float, burst: int, now: float
    ) -> dict[str, int]:
        params: dict[str, Any] = {"now": now, "rate": float(rate), "burst": int(burst), "eps": EPSILON}
        rows = []
        for j, (key, n) in enumerate(items):
            first = min(n, burst)
            rows.append(f"(:k{j}, :now + {first} / :rate, {first})")
            params[f"k{j}"] = key
        cur.execute(
            "INSERT INTO buckets (name, full_at, taken) VALUES " + ",".join(rows) + self._upsert_tail(),
            params,
        )
        return {name: int(n) for name, n in cur.fetchall()}

    def count_buckets(self) -> int:
        return int(self._query("SELECT count(*) FROM buckets")[0][0])


class PostgresBucketSql(BucketSql):
    """PostgreSQL's dialect: LEAST/floor, and the keys as arrays (one cached statement per batch)."""

    _least, _floor = "LEAST", "floor({})"

    def _take(
        self, cur: Any, items: list[tuple[str, int]], rate: float, burst: int, now: float
    ) -> dict[str, int]:
        sql = (
            "INSERT INTO buckets (name, full_at, taken)"
            " SELECT name, :now + LEAST(n, :burst) / :rate, LEAST(n, :burst)"
            " FROM unnest(:names::text[], :wanted::bigint[]) AS r(name, n)" + self._upsert_tail()
        )
        params = {"now": now, "rate": float(rate), "burst": int(burst), "eps": EPSILON,
                  "names": [k for k, _ in items], "wanted": [n for _, n in items]}  # fmt: skip
        # ``:name`` as psycopg's ``%(name)s`` (``::type`` casts untouched).
        cur.execute(re.sub(r"(?<!:):([a-z]+)", r"%(\1)s", sql), params)
        return {name: int(n) for name, n in cur.fetchall()}
