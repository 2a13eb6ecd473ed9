"""k-anonymity on every aggregate the API returns (pure functions).

Rules, whatever the filters:

1. Counts are served per zone and per **fixed bucket** of time (hour, day, week, aligned to
   UTC), never summed over a time range or a set of zones the caller chooses. Each served
   number is one bucket of one zone.
2. A bucket under ``k`` is **suppressed**: the row is returned with ``n: null`` and
   ``suppressed: true`` (its existence is already public: the zone exists), never its value.
3. No endpoint returns a logbook row, a person, or anything finer than the anonymised event.

Why differencing fails: a differencing attack subtracts two overlapping aggregates
(zones A+B minus zone B, or hours 0-5 minus hours 0-4) to isolate a small cell. With
rule 1 no served number is a sum over a chosen set, so there is nothing to subtract;
with rule 2 the small cell itself is never served. A coarser bucket (a day) is the sum
of its hours, but it is computed and checked against k on its own: knowing the day
(≥ k) and the hours that were served (each ≥ k) bounds a suppressed hour only by the
day minus the served hours, which is the sum of the suppressed hours of that day; so a
day is suppressed too whenever that sum is itself under k (complementary suppression).

Named areas (quartiers) and H3 cells do not nest, so an area's count minus the cells
inside it is not an exact difference; it is still a residual risk when an area holds
only whole cells, documented in docs/api.md.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Literal

__all__ = ["BUCKETS", "bucket_rows", "suppress"]

BUCKETS: dict[str, int] = {"hour": 3600, "day": 86_400, "week": 7 * 86_400}
Bucket = Literal["hour", "day", "week"]
_MONDAY = 4 * 86_400  # 1970-01-05 was a Monday: weeks start on Mondays, UTC


def _start(ts: int, bucket: Bucket) -> int:
    size = BUCKETS[bucket]
    offset = _MONDAY if bucket == "week" else 0
    return ts - (ts - offset) % size


def bucket_rows(rows: Iterable[dict[str, Any]], bucket: Bucket) -> list[dict[str, Any]]:
    """Sum cube rows into aligned buckets per zone, source and category (hour rows stay as they are)."""
    sums: dict[tuple[str, int, str, str], float] = defaultdict(float)
    hours: dict[tuple[str, int, str, str], list[float]] = defaultdict(list)
    for r in rows:
        key = (r["zone"], _start(int(r["hour"]), bucket), r["source"], r["category"])
        sums[key] += r["n"]
        hours[key].append(r["n"])
    out = []
    for (zone, start, source, category), n in sorted(sums.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        out.append({"zone": zone, "start": start, "bucket": bucket, "source": source, "category": category,
                    "n": n, "_parts": hours[(zone, start, source, category)]})  # fmt: skip
    return out


def suppress(rows: Sequence[dict[str, Any]], k: int, *, value: str = "n") -> list[dict[str, Any]]:
    """Rows under ``k`` (or whose small parts add up to under k) with ``null`` and ``suppressed``."""
    out = []
    for r in rows:
        item = {key: v for key, v in r.items() if key != "_parts"}
        parts = r.get("_parts", [])
        small = sum(p for p in parts if 0 < p < k)
        hidden = item[value] is not None and (item[value] < k or (len(parts) > 1 and 0 < small < k))
        if hidden:
            item[value] = None
        item["suppressed"] = bool(hidden)
        out.append(item)
    return out
