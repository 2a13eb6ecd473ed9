"""What the connectors share: reading CSV rows (plain or gzip, with or without a header, any encoding and
delimiter: ``hub/fusion/textfile.py``), and two row shapes.

* incidents (police logbook, fire brigade, parks agents): one row = one event with a
  time, a category and a point;
* aggregates (operator presence, hospital admissions): one row = a count in a zone
  and a time slot, refused when under the mapping's ``k``.

A connector reads only the columns its mapping names: everything else in the file
(free text, names, phone numbers) is never read, so never stored.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from hub.fusion.observation import (
    HOUR,
    ImportReport,
    Mapping,
    Observation,
    RowError,
    in_bounds,
    parse_day_and_hour,
    parse_time,
)
from hub.fusion.scrub import scrub, shown
from hub.fusion.textfile import choose_delimiter, open_text, sniff_format

__all__ = ["AggregateConnector", "Connector", "IncidentConnector", "read_rows"]


class Connector(Protocol):
    """A city-data source: turns a file into observations, reporting each row it refuses."""

    name: str
    description: str

    def read(self, path: Path, mapping: Mapping, report: ImportReport) -> Iterator[Observation]: ...


_COLUMN_KEYS = ("time_column", "hour_column", "category_column", "lat_column", "lon_column", "zone_column",
                "count_column")  # fmt: skip


def _missing(path: Path, mapping: Mapping, missing: set[str], header: list[str], delimiter: str) -> str:
    """Which mapping keys name columns the file lacks, what the file has, and the fixes."""
    keys = [f"{key} {getattr(mapping, key)!r}" for key in _COLUMN_KEYS if getattr(mapping, key) in missing]
    return (
        f"{path}: no column for the mapping's {', '.join(keys)}; the header (read with delimiter "
        f"{delimiter!r}) has {header[:20]}: fix those keys in the mapping (--mapping), or pass --delimiter "
        "if the columns were not split right"
    )


def read_rows(path: Path, mapping: Mapping, report: ImportReport) -> Iterator[tuple[int, dict[str, str]]]:
    """(row number, {column: value}) for each data row; only the mapping's columns are kept.

    Raises:
        ValueError: no such file, an encoding that cannot read it, columns missing, or a truncated
            file (its last row cut short), naming the file, row and column and the fix.
    """
    wanted = {getattr(mapping, key) for key in _COLUMN_KEYS} - {None, ""}
    fmt = sniff_format(path, mapping.encoding)
    if fmt.warning:
        report.warnings.append(fmt.warning)
    with open_text(path, fmt) as fh:
        first = fh.readline()
        width = len(mapping.columns) if mapping.columns else None
        delimiter = mapping.delimiter or choose_delimiter(first, wanted, width)
        # An empty file has no rows (csv would read its empty first line as one row of no field).
        reader = csv.reader(chain([first], fh) if first else fh, delimiter=delimiter)
        header = mapping.columns or next(reader, [])
        missing = wanted - set(header)
        if missing:
            raise ValueError(_missing(path, mapping, missing, header, delimiter))
        index = {name: header.index(name) for name in wanted}
        short: RowError | None = None  # the last short row: if the file ends there, it was cut
        try:
            for number, row in enumerate(reader, start=1):
                if short is not None:
                    report.reject(short)
                    short = None
                report.rows += 1
                if len(row) < len(header):
                    short = RowError(number, "<row>", f"{len(row)} fields, expected {len(header)}")
                    continue
                yield number, {name: row[i] for name, i in index.items()}
        except csv.Error as exc:
            raise ValueError(f"{path}: line {reader.line_num}: {exc}: fix or re-export the file") from None
    if short is not None and not fmt.ends_with_newline:
        raise ValueError(
            f"{path}: row {short.row} (line {reader.line_num}) has {short.reason.split(' fields')[0]} of "
            f"{len(header)} fields and the file ends there, without a line break: it looks truncated; "
            "copy or export it again (nothing imported)"
        )
    if short is not None:
        report.reject(short)


def _number(
    values: dict[str, str], column: str | None, number: int, *, decimal_comma: bool = False
) -> float | RowError:
    assert column is not None
    text = values[column].strip()
    if decimal_comma and text.count(",") == 1 and "." not in text:
        # French spreadsheets write 43,2965; coordinates are never grouped in thousands, counts may be.
        text = text.replace(",", ".")
    try:
        return float(text)
    except ValueError:
        return RowError(number, column, f"{scrub(text, 30)!r} is not a number")


def _time_and_category(
    number: int, values: dict[str, str], mapping: Mapping, tz: ZoneInfo, report: ImportReport
) -> tuple[int, str] | None:
    """The row's hour and category, or None after reporting what is wrong."""
    try:
        if mapping.hour_column:
            hour = parse_day_and_hour(
                values[mapping.time_column], values[mapping.hour_column], mapping.time_format, tz
            )
        else:
            hour = parse_time(values[mapping.time_column], mapping.time_format, tz)
    except ValueError as exc:
        report.reject(RowError(number, mapping.time_column, str(exc)))
        return None
    raw = values[mapping.category_column] if mapping.category_column else ""
    category = mapping.category_of(raw)
    if category is None:
        field = mapping.category_column or "category"
        report.reject(
            RowError(number, field, f"unknown category {shown(raw)}; add it to the mapping's categories")
        )
        return None
    return hour, category


def _incident_span(mapping: Mapping, report: ImportReport) -> int:
    """Hours each incident row covers; date-only rows are spread over the day, with a warning.

    Raises:
        ValueError: a date-only time format without ``span_h: 24``, naming the fix.
    """
    if mapping.date_only and mapping.span_h == 1:
        raise ValueError(
            f"time_format {mapping.time_format!r} has no hour: add 'span_h: 24' to the mapping "
            "(each row is then spread over its day)"
        )
    if mapping.span_h > 1:
        report.warnings.append(
            f"{mapping.source}: each row covers {mapping.span_h} h and is spread evenly over them; "
            "this source cannot inform hour-of-day or hour-of-week profiles"
        )
    return mapping.span_h


class IncidentConnector:
    """One row, one incident: time, category, point."""

    def __init__(self, name: str, description: str) -> None:
        self.name = name
        self.description = description

    def read(self, path: Path, mapping: Mapping, report: ImportReport) -> Iterator[Observation]:
        tz = ZoneInfo(mapping.timezone)
        if mapping.lat_column is None or mapping.lon_column is None:
            raise ValueError(f"connector {self.name}: the mapping must name lat_column and lon_column")
        span = _incident_span(mapping, report)
        for number, values in read_rows(path, mapping, report):
            when = _time_and_category(number, values, mapping, tz, report)
            if when is None:
                continue
            hour, category = when
            lat = _number(values, mapping.lat_column, number, decimal_comma=True)
            lon = _number(values, mapping.lon_column, number, decimal_comma=True)
            if isinstance(lat, RowError) or isinstance(lon, RowError):
                report.reject(lat if isinstance(lat, RowError) else lon)  # type: ignore[arg-type]
                continue
            if not in_bounds(lat, lon, mapping.bounds):
                report.reject(
                    RowError(
                        number,
                        f"{mapping.lat_column},{mapping.lon_column}",
                        f"({lat:.5f}, {lon:.5f}) is outside the city bounds {mapping.bounds}",
                    )
                )
                continue
            # A row covering several hours is spread evenly over them, never dumped into the first one.
            for k in range(span):
                yield Observation(
                    mapping.source, category, hour + k * HOUR, 1.0 / span, lat=lat, lon=lon, row=number
                )


class AggregateConnector:
    """One row, one count in a zone and time slot; counts under k are refused, never stored."""

    def __init__(self, name: str, description: str) -> None:
        self.name = name
        self.description = description

    def read(self, path: Path, mapping: Mapping, report: ImportReport) -> Iterator[Observation]:
        tz = ZoneInfo(mapping.timezone)
        if mapping.count_column is None or (mapping.zone_column is None and mapping.lat_column is None):
            raise ValueError(f"connector {self.name}: the mapping must name count_column and zone_column")
        for number, values in read_rows(path, mapping, report):
            when = _time_and_category(number, values, mapping, tz, report)
            if when is None:
                continue
            hour, category = when
            count = _number(values, mapping.count_column, number)
            if isinstance(count, RowError):
                report.reject(count)
                continue
            if count < 0:
                report.reject(RowError(number, mapping.count_column, f"negative count {count:g}"))
                continue
            if count < mapping.k:
                report.reject(
                    RowError(number, mapping.count_column, f"count under k={mapping.k} (not stored)")
                )
                continue
            assert mapping.zone_column is not None
            zone = values[mapping.zone_column].strip()
            if not zone:
                report.reject(RowError(number, mapping.zone_column, "empty zone"))
                continue
            yield Observation(
                mapping.source,
                category,
                hour,
                count,
                zone=f"{mapping.zone_kind}:{zone}",
                span_h=mapping.span_h,
                row=number,
            )
