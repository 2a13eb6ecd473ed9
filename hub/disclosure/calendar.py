"""The city's calendar: hour ⊂ day ⊂ ISO week ⊂ month, in the city's time zone (pure).

Every level nests in the next, so that the served table is one tree per month and
disclosure control can solve it as a hierarchical table:

* an **hour** is an hour of the cube (UTC hours; the zone must have whole-hour offsets);
* a **day** runs from local midnight to local midnight (23 or 25 hours on DST days);
* a **week** is an ISO week: Monday 00:00 local to the next Monday;
* a **month** is made of whole ISO weeks: the weeks whose Thursday falls in the calendar
  month (the ISO 8601 rule for years, applied to months), so four or five weeks; a
  calendar month would cut a week in two and break the nesting.

``since``/``until`` are widened to whole buckets of the level asked for: no partial week
or month is ever served as one.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from vigie.exceptions import VigieError

__all__ = ["LEVELS", "CityCalendar", "Level"]

Level = Literal["hour", "day", "week", "month"]
LEVELS: tuple[Level, ...] = get_args(Level)
HOUR = 3600


def _month_weeks_start(year: int, month: int) -> date:
    """The Monday of the first ISO week whose Thursday lies in this month."""
    first = date(year, month, 1)
    monday = first - timedelta(days=first.weekday())
    return monday if (monday + timedelta(days=3)).month == month else monday + timedelta(days=7)


class CityCalendar:
    """Bucket boundaries (UTC epoch seconds) in one time zone."""

    def __init__(self, tz: str = "Europe/Paris") -> None:
        try:
            self.zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise VigieError(
                f"time zone {tz!r} is not an IANA zone name: set VIGIE_HUB_TZ to one such as 'Europe/Paris'"
            ) from exc
        self.tz = tz

    def _local(self, ts: int) -> datetime:
        return datetime.fromtimestamp(ts, self.zone)

    def _epoch(self, day: date) -> int:
        return int(datetime(day.year, day.month, day.day, tzinfo=self.zone).timestamp())

    def _day_start(self, ts: int) -> date:
        return self._local(ts).date()

    def _month_of(self, d: date) -> tuple[int, int]:
        thursday = d - timedelta(days=d.weekday()) + timedelta(days=3)
        return thursday.year, thursday.month

    def start(self, ts: int, level: Level) -> int:
        """Start of the bucket of ``level`` holding ``ts``."""
        return _start(self, ts, level)

    def end(self, start: int, level: Level) -> int:
        """End (exclusive) of the bucket of ``level`` starting at ``start``."""
        if level == "hour":
            return start + HOUR
        d = self._day_start(start)
        if level == "day":
            return self._epoch(d + timedelta(days=1))
        if level == "week":
            return self._epoch(d + timedelta(days=7))
        year, month = self._month_of(d)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return self._epoch(_month_weeks_start(year, month))

    def align(self, since: int | None, until: int | None, level: Level) -> tuple[int | None, int | None]:
        """``since`` rounded down and ``until`` rounded up to whole buckets of ``level``."""
        start = None if since is None else self.start(since, level)
        if until is None:
            return start, None
        end = self.start(until, level)
        return start, end if end == until else self.end(end, level)

    def parent(self, start: int, level: Level) -> tuple[Level, int] | None:
        """The enclosing bucket one level up (None for a month)."""
        i = LEVELS.index(level)
        if i == len(LEVELS) - 1:
            return None
        up = LEVELS[i + 1]
        return up, self.start(start, up)


@lru_cache(maxsize=65_536)
def _start(cal: CityCalendar, ts: int, level: Level) -> int:
    if level == "hour":
        return ts - ts % HOUR
    d = cal._day_start(ts)
    if level == "day":
        return cal._epoch(d)
    monday = d - timedelta(days=d.weekday())
    if level == "week":
        return cal._epoch(monday)
    return cal._epoch(_month_weeks_start(*cal._month_of(d)))
