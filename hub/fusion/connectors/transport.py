"""Public transport: GTFS static places the stops; validations per stop and hour are the observations.

Input: a ridership CSV (``stop_id``, hour, count; columns named in the mapping's
``zone_column``, ``time_column``, ``count_column``) and the GTFS feed (zip) whose
``stops.txt`` gives each stop's position. A stop missing from the feed is
reported, not imported. GTFS-realtime alerts are not read yet (docs/fusion.md).
"""

from __future__ import annotations

import csv
import io
import math
import zipfile
from collections.abc import Iterator
from pathlib import Path

from hub.fusion.connectors.base import AggregateConnector
from hub.fusion.observation import ImportReport, Mapping, Observation, RowError, in_bounds

__all__ = ["TransportConnector", "read_gtfs_stops"]


def read_gtfs_stops(feed: Path) -> dict[str, tuple[float, float]]:
    """stop_id → (lat, lon) from a GTFS zip's stops.txt.

    Raises:
        ValueError: not a zip, or no stops.txt with stop_id, stop_lat, stop_lon.
    """
    try:
        with zipfile.ZipFile(feed) as z, z.open("stops.txt") as raw:
            reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8-sig"))
            stops = {}
            for row in reader:
                # A stop without usable coordinates is left out; rows naming it are then
                # rejected with "stop … is not in the feed" (counted in the import report).
                try:
                    lat, lon = float(row["stop_lat"]), float(row["stop_lon"])
                    stop = row["stop_id"].strip()
                except (KeyError, ValueError, TypeError, AttributeError):
                    continue
                if stop and math.isfinite(lat) and math.isfinite(lon):
                    stops[stop] = (lat, lon)
            return stops
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{feed}: not a GTFS feed with stops.txt ({exc})") from None


class TransportConnector:
    """Validations per stop and hour, placed through the GTFS feed's stops."""

    name = "transport"
    description = "Public transport: validations per stop and hour, stops from GTFS static"

    def __init__(self) -> None:
        self._rows = AggregateConnector("transport", self.description)

    def read(
        self, path: Path, mapping: Mapping, report: ImportReport, *, gtfs: Path | None = None
    ) -> Iterator[Observation]:
        feed = gtfs or (Path(mapping.gtfs) if mapping.gtfs else None)
        if feed is None:
            raise ValueError(
                "connector transport: give the GTFS feed (--gtfs FEED.zip or `gtfs:` in the mapping)"
            )
        stops = read_gtfs_stops(feed)
        for obs in self._rows.read(path, mapping, report):
            row = obs.row
            stop = (obs.zone or "").partition(":")[2]
            where = stops.get(stop)
            if where is None:
                report.reject(
                    RowError(row, mapping.zone_column or "stop_id", f"stop {stop!r} is not in {feed.name}")
                )
                continue
            if not in_bounds(*where, mapping.bounds):
                report.reject(
                    RowError(row, mapping.zone_column or "stop_id", f"stop {stop!r} is outside the bounds")
                )
                continue
            yield Observation(
                obs.source, obs.category, obs.hour, obs.count, lat=where[0], lon=where[1], row=row
            )
