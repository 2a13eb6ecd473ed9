"""Time parameters and fields: ISO 8601 or UTC epoch seconds in, both out.

Analysts write ``2026-01-05``, ``2026-01-05T08:00`` or ``2026-01-05T08:00:00+01:00``;
scripts written before ISO was accepted send epoch seconds, which stay valid. A date or
time without an offset is in the city's time zone (``VIGIE_HUB_TZ``): ``since=2026-01-01``
is the city's New Year's midnight, as an analyst means it. Times are served as epoch
seconds (the fields the dashboard reads) and as ISO 8601 beside them (``start_iso``...).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import Depends, HTTPException, Query, Request
from pydantic import BeforeValidator, WithJsonSchema

__all__ = ["EPOCH_MAX", "SinceQuery", "UntilQuery", "iso", "localize", "parse_time", "with_iso"]

#: Times are UTC epoch seconds up to the year 2100: bounded, so that no query overflows the store.
EPOCH_MAX = 4_102_444_800
_EPOCH = re.compile(r"[0-9]{1,10}")
_FORMS = "give ISO 8601 (2026-01-05, 2026-01-05T08:00, 2026-01-05T08:00:00+01:00, …Z) or UTC epoch seconds"


def parse_time(value: Any) -> int | datetime | None:
    """Epoch seconds, or a naive ``datetime`` (local to the city) for a date or time without an offset.

    Raises:
        ValueError: anything else, or epoch seconds outside 1970..2100, naming the forms accepted.
    """
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not a time: {_FORMS}")
    text = str(value).strip()
    if isinstance(value, int | float) or _EPOCH.fullmatch(text):
        return _in_range(int(float(text)), value)
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day)
        when = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not a time: {_FORMS}") from None
    return when if when.tzinfo is None else _in_range(int(when.timestamp()), value)


def _in_range(ts: int, shown: Any) -> int:
    if not 0 <= ts <= EPOCH_MAX:
        raise ValueError(f"{str(shown)[:40]!r} is outside 1970-01-01..2100-01-01")
    return ts


def localize(value: int | datetime | None, zone: ZoneInfo, name: str) -> int | None:
    """Epoch seconds, an offset-less time read in ``zone``.

    Raises:
        HTTPException: 422 naming the parameter when the time is outside 1970..2100.
    """
    if value is None or isinstance(value, int):
        return value
    try:
        return _in_range(int(value.replace(tzinfo=zone).timestamp()), value.isoformat())
    except (ValueError, OverflowError) as exc:
        raise HTTPException(
            422, detail=[{"loc": ["query", name], "type": "value_error", "msg": str(exc)}]
        ) from None


_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "integer", "minimum": 0, "maximum": EPOCH_MAX},
            {"type": "string", "format": "date-time"},
            {"type": "string", "format": "date"},
        ]
    }
)
_HOW = "ISO 8601 (without an offset: the city's time zone) or UTC epoch seconds."
_Since = Annotated[
    int | datetime | None,
    BeforeValidator(parse_time),
    _SCHEMA,
    Query(description=f"From (inclusive): {_HOW}"),
]
_Until = Annotated[
    int | datetime | None,
    BeforeValidator(parse_time),
    _SCHEMA,
    Query(description=f"Before (exclusive): {_HOW}"),
]


def _since(request: Request, since: _Since = None) -> int | None:
    return localize(since, request.app.state.calendar.zone, "since")


def _until(
    request: Request, since: Annotated[int | None, Depends(_since)], until: _Until = None
) -> int | None:
    end = localize(until, request.app.state.calendar.zone, "until")
    if since is not None and end is not None and end <= since:
        # An empty or inverted range is a mistake (dates swapped), not a question with an empty answer.
        zone = request.app.state.calendar.zone
        msg = (
            f"until {iso(end, zone)} is not after since {iso(since, zone)}: the range is empty; "
            "swap them, or give an until later than since (until is exclusive)"
        )
        raise HTTPException(422, detail=[{"loc": ["query", "until"], "type": "value_error", "msg": msg}])
    return end


#: ``since``/``until`` as epoch seconds, whichever form the caller used (documented as both).
SinceQuery = Annotated[int | None, Depends(_since)]
UntilQuery = Annotated[int | None, Depends(_until)]


def iso(ts: float | None, zone: ZoneInfo | None = None) -> str | None:
    """ISO 8601 with the zone's offset (UTC ``Z`` without one); None stays None."""
    if ts is None:
        return None
    when = datetime.fromtimestamp(ts, zone or UTC)
    text = when.isoformat(timespec="seconds")
    return text.replace("+00:00", "Z") if zone is None else text


def with_iso(row: dict[str, Any], fields: tuple[str, ...], zone: ZoneInfo | None) -> dict[str, Any]:
    """The row with ``<field>_iso`` beside each epoch field: added, never replacing one."""
    return {**row, **{f"{f}_iso": iso(row[f], zone) for f in fields if isinstance(row.get(f), int | float)}}
