"""The cube's pre-aggregated levels: day, ISO week and month of weeks, in UTC (pure; no I/O).

The analysts' city-wide questions ("this week, per district") would otherwise sum 168
hours × every zone on each request. ``cube_levels`` holds those sums, kept in the same
transaction as the hourly cube (``fusion.py``), so the two never disagree.

Buckets follow ``hub/disclosure/calendar.py`` in UTC: a week is an ISO week from Monday
00:00 UTC, a month is the whole ISO weeks whose Thursday falls in the calendar month.
The disclosure layer still reads the hourly rows and buckets them in the city's own time
zone: these sums are a store query, not what ``/v1/cube`` serves.
"""

from __future__ import annotations

from collections.abc import Iterable

from hub.disclosure.calendar import CityCalendar
from hub.storage.base import CUBE_LEVELS, CubeLevel

__all__ = [
    "POSTGRES_MONTH_OF",
    "SQLITE_MONTH_OF",
    "UTC",
    "LevelKey",
    "backfill_sql",
    "bucket_starts",
    "level_deltas",
]

#: Each dialect's first second (UTC) of the calendar month holding the epoch ``{x}``.
SQLITE_MONTH_OF = "CAST(strftime('%s', {x}, 'unixepoch', 'start of month') AS INTEGER)"
POSTGRES_MONTH_OF = "extract(epoch FROM date_trunc('month', to_timestamp({x}) AT TIME ZONE 'UTC'))::bigint"

UTC = CityCalendar("UTC")
LevelKey = tuple[CubeLevel, int, str, str, str]  # level, start, zone, source, category


def bucket_starts(hour: int) -> dict[CubeLevel, int]:
    """The start of each pre-aggregated bucket holding ``hour``."""
    return {level: UTC.start(hour, level) for level in CUBE_LEVELS}


def level_deltas(changes: Iterable[tuple[str, int, str, str, float]]) -> dict[LevelKey, float]:
    """What each bucket gains from (zone, hour, source, category, change of n) rows; zero changes dropped."""
    out: dict[LevelKey, float] = {}
    for zone, hour, source, category, dn in changes:
        if dn == 0:
            continue
        for level, start in bucket_starts(hour).items():
            key = (level, start, zone, source, category)
            out[key] = out.get(key, 0.0) + dn
    return out


def backfill_sql(month_of: str) -> list[str]:
    """INSERTs filling ``cube_levels`` from the hourly cube (migration 12), the same buckets as above.

    ``month_of`` is the dialect's expression for the first day (epoch s, UTC) of the calendar
    month holding the epoch ``{x}``: the month of weeks starts on the Monday of its first Thursday.
    """
    day = "(hour - hour % 86400)"
    week = f"({day} - (({day} / 86400 + 3) % 7) * 86400)"  # 1970-01-01 was a Thursday
    first = month_of.replace("{x}", f"({week} + 259200)")  # the month holding the week's Thursday
    month = f"({first} + ((3 - (({first} / 86400 + 3) % 7) + 7) % 7) * 86400 - 259200)"
    return [
        "INSERT INTO cube_levels (level, start, zone, source, category, n)"
        f" SELECT '{level}', {start}, zone, source, category, sum(n) FROM cube"
        f" GROUP BY {start}, zone, source, category"
        for level, start in (("day", day), ("week", week), ("month", month))
    ]
