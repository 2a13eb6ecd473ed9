"""What every connector produces: observations (a count of a category at a place and hour) and row errors."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hub.fusion.scrub import scrub
from vigie.exceptions import ConfigError

__all__ = [
    "ImportReport",
    "Mapping",
    "Observation",
    "RowError",
    "in_bounds",
    "load_mapping",
    "parse_day_and_hour",
    "parse_time",
]

HOUR = 3600
_VALUES = re.compile(r"\([^)]*\)|'[^']*'|\"[^\"]*\"|-?\d[\d.,:-]*")


@dataclass(frozen=True, slots=True)
class Observation:
    """``count`` of ``category`` from ``source`` in the hour starting at ``hour`` (epoch s), point or zone."""

    source: str
    category: str
    hour: int
    count: float = 1.0
    lat: float | None = None
    lon: float | None = None
    zone: str | None = None  # a zone key given by the source (``h3:…`` or ``poly:…``) instead of a point
    span_h: int = 1  # 24 for day aggregates (hospital admissions)
    row: int = 0  # the source row, for reports


@dataclass(frozen=True, slots=True)
class RowError:
    """Row ``row`` (1 = the first data row) was not imported: ``field`` is wrong for ``reason``."""

    row: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.field}: {self.reason}"


@dataclass
class ImportReport:
    """Counts and the first errors of one import."""

    source: str
    file: str
    rows: int = 0
    imported: int = 0
    rejected: int = 0
    errors: list[RowError] = field(default_factory=list)
    by_reason: dict[str, int] = field(default_factory=dict)
    duplicate_file: bool = False
    warnings: list[str] = field(default_factory=list)

    def reject(self, error: RowError, keep: int = 50) -> None:
        self.rejected += 1
        # Group by the kind of problem: values (numbers, quoted text, bracketed tuples) become "…".
        key = f"{error.field}: {_VALUES.sub('…', error.reason)}"
        self.by_reason[key] = self.by_reason.get(key, 0) + 1
        if len(self.errors) < keep:
            self.errors.append(error)


class Mapping(BaseModel):
    """How one file's columns map to observations (a YAML file per source format, see docs/fusion.md)."""

    model_config = ConfigDict(extra="forbid")
    connector: str = Field(
        description="Connector plugin: police, fire, parks, presence, transport, hospital."
    )
    source: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="Source name stored in the cube.")
    description: str = ""
    columns: list[str] | None = Field(
        default=None, description="Column names when the CSV has no header row."
    )
    delimiter: str | None = Field(
        default=None, description="Field separator; default: the one that splits the header into the columns."
    )
    encoding: str | None = Field(
        default=None, description="Text encoding; default: UTF-8 when the file is, else cp1252 (a warning)."
    )
    time_column: str = Field(description="Date and time of the incident (or of the aggregate).")
    time_format: str | None = Field(default=None, description="strptime format; default ISO 8601.")
    hour_column: str | None = Field(
        default=None,
        description="The local hour of day (0-23) when the time column gives the day: the time column is "
        "then read up to its first space, with time_format.",
    )
    timezone: str = Field(default="Europe/Paris", description="Zone of times without an offset.")
    city_timezone: str | None = Field(
        default=None,
        description="The city's own zone, for local weeks and days (default: ``timezone``); differs when "
        "the file writes its times in UTC.",
    )
    category_column: str | None = None
    categories: dict[str, str] = Field(
        default_factory=dict, description="Raw value → category (case-insensitive)."
    )
    category_prefixes: dict[str, str] = Field(default_factory=dict, description="Raw prefix → category.")
    fixed_category: str | None = Field(default=None, description="One category for every row (aggregates).")
    lat_column: str | None = None
    lon_column: str | None = None
    zone_column: str | None = Field(
        default=None, description="Zone given by the source (H3 cell or area name)."
    )
    zone_kind: Literal["h3", "poly"] = "poly"
    count_column: str | None = Field(default=None, description="Aggregates: the count; incidents: 1 per row.")
    k: int = Field(
        default=1, ge=1, description="Aggregates: cells under k are rejected (k-anonymity at source)."
    )
    bounds: tuple[float, float, float, float] | None = Field(
        default=None, description="(south, west, north, east): points outside are rejected."
    )
    exclude_from_training: list[str] = Field(
        default_factory=list,
        description="Categories stored but not learned from (police-initiated: they measure patrols).",
    )
    span_h: int = Field(default=1, ge=1, le=24, description="Hours each row covers (24: daily aggregates).")
    gtfs: str | None = Field(
        default=None, description="Transport: the GTFS feed (zip) that places the stops."
    )

    @field_validator("timezone", "city_timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name like Europe/Paris") from None
        return value

    @property
    def local_zone(self) -> ZoneInfo:
        """The city's time zone: where weeks start on Monday and days at midnight."""
        return ZoneInfo(self.city_timezone or self.timezone)

    @property
    def date_only(self) -> bool:
        """True when the time format carries no hour: such rows cannot inform hourly profiles."""
        if self.hour_column is not None:
            return False
        return self.time_format is not None and not any(d in self.time_format for d in ("%H", "%I"))

    def category_of(self, raw: str) -> str | None:
        """The category for a raw value, or None when the mapping does not know it."""
        if self.fixed_category:
            return self.fixed_category
        text = raw.strip()
        lowered = {k.lower(): v for k, v in self.categories.items()}
        if text.lower() in lowered:
            return lowered[text.lower()]
        for prefix, category in self.category_prefixes.items():
            if text.lower().startswith(prefix.lower()):
                return category
        return None


def load_mapping(path: Path) -> Mapping:
    """Read and validate a mapping file.

    Raises:
        ConfigError: naming the file, the key and the problem.
    """
    try:
        data = yaml.safe_load(path.read_text())
        return Mapping.model_validate(data)
    except OSError as exc:
        raise ConfigError(f"mapping {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(
            f"mapping {path}: {where}{problem}: fix the YAML (indentation, brackets, quotes) "
            "and compare with a shipped mapping in hub/fusion/mappings/"
        ) from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(whole file)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"mapping {path}: {problems}") from None


def parse_time(text: str, fmt: str | None, tz: ZoneInfo) -> int:
    """Epoch seconds of the start of the hour holding ``text``.

    Raises:
        ValueError: with the value (scrubbed) and the expected format.
    """
    value = text.strip()
    try:
        when = dt.datetime.strptime(value, fmt) if fmt else dt.datetime.fromisoformat(value)
    except ValueError:
        # The value is scrubbed (a date may be a birth date), so the hint must say how to fix it blind.
        raise ValueError(
            f"{scrub(value, 40)!r} is not a date in format {fmt or 'ISO 8601'}: set time_format in the "
            "mapping to the strptime pattern of the file, e.g. %d/%m/%Y %H:%M for French exports"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    epoch = int(when.timestamp())
    return epoch - epoch % HOUR


def parse_day_and_hour(day: str, hour: str, fmt: str | None, tz: ZoneInfo) -> int:
    """Epoch seconds of local ``hour`` o'clock on the day that ``day`` starts with (up to its first space).

    Raises:
        ValueError: with the values (scrubbed) and what was expected.
    """
    text = day.strip().split(" ", 1)[0]
    try:
        date = dt.datetime.strptime(text, fmt).date() if fmt else dt.date.fromisoformat(text)
        h = int(hour.strip())
        if not 0 <= h <= 23:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"{scrub(text, 40)!r} at hour {scrub(hour, 10)!r} is not a day in format {fmt or 'ISO 8601'} "
            "and an hour 0-23"
        ) from None
    return int(dt.datetime.combine(date, dt.time(h), tzinfo=tz).timestamp())


def in_bounds(lat: float, lon: float, bounds: Sequence[float] | None) -> bool:
    if bounds is None:
        return -90 <= lat <= 90 and -180 <= lon <= 180
    south, west, north, east = bounds
    return south <= lat <= north and west <= lon <= east
