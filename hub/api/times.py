"""Time parameters and fields: ISO 8601 or UTC epoch seconds in, both out.

Analysts write ``2026-01-05``, ``2026-01-05T08:00`` or ``2026-01-05T08:00:00+01:00``;
scripts written before ISO was accepted send epoch seconds, which stay valid. A date or
time without an offset is UTC (a bucket's bounds are widened to whole buckets of the
city's calendar anyway). Times are served as epoch seconds (the fields the dashboard
reads) and as ISO 8601 in the city's time zone beside them (``start_iso``...).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import Query
from pydantic import BeforeValidator, WithJsonSchema

__all__ = ["EPOCH_MAX", "SinceQuery", "TimeQuery", "UntilQuery", "iso", "to_epoch", "with_iso"]

#: Times are UTC epoch seconds up to the year 2100: bounded, so that no query overflows the store.
EPOCH_MAX = 4_102_444_800
_EPOCH = re.compile(r"[0-9]{1,10}")


def to_epoch(value: Any) -> int | None:
    """Epoch seconds from an int, a string of digits or an ISO 8601 date or date-time.

    Raises:
        ValueError: anything else, or a time outside 1970..2100, naming the forms accepted.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("expected a time, not a boolean")
    if isinstance(value, int | float):
        ts = int(value)
    elif isinstance(value, str):
        text = value.strip()
        ts = int(text) if _EPOCH.fullmatch(text) else _iso_to_epoch(text, value)
    else:
        raise ValueError(f"{value!r} is not a time")
    if not 0 <= ts <= EPOCH_MAX:
        raise ValueError(f"{value!r} is outside 1970-01-01..2100-01-01")
    return ts


def _iso_to_epoch(text: str, shown: str) -> int:
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp())
        when = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ValueError(
            f"{shown[:40]!r} is not a time: give ISO 8601 (2026-01-05, 2026-01-05T08:00:00+01:00, "
            "…Z) or UTC epoch seconds"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "integer", "minimum": 0, "maximum": EPOCH_MAX},
            {"type": "string", "format": "date-time"},
            {"type": "string", "format": "date"},
        ]
    }
)
_FORMS = "ISO 8601 (2026-01-05, 2026-01-05T08:00:00+01:00; no offset means UTC) or UTC epoch seconds."
#: Time parameters taking ISO 8601 or epoch seconds, documented as both in the OpenAPI spec.
TimeQuery = Annotated[int | None, BeforeValidator(to_epoch), _SCHEMA, Query(description=f"A time: {_FORMS}")]
SinceQuery = Annotated[
    int | None, BeforeValidator(to_epoch), _SCHEMA, Query(description=f"From (inclusive): {_FORMS}")
]
UntilQuery = Annotated[
    int | None, BeforeValidator(to_epoch), _SCHEMA, Query(description=f"Before (exclusive): {_FORMS}")
]


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
