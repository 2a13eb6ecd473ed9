"""Import one file through its connector into the cube, atomically and at most once.

The whole file goes in one transaction keyed by its SHA-256: a crash mid-import
leaves nothing, importing the same file again adds nothing.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import h3

from hub.fusion.connectors import CONNECTORS
from hub.fusion.observation import ImportReport, Mapping, Observation, RowError
from hub.fusion.zones import ZoneIndex, h3_key
from hub.storage import CubeRow, Store

__all__ = ["aggregate", "file_sha256", "import_file"]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _zone_keys(obs: Observation, zones: ZoneIndex, report: ImportReport) -> list[str]:
    if obs.lat is not None and obs.lon is not None:
        return zones.keys(obs.lat, obs.lon)
    assert obs.zone is not None
    kind, _, value = obs.zone.partition(":")
    if kind == "h3":
        if not h3.is_valid_cell(value):
            report.reject(RowError(obs.row, "zone", f"{value[:20]!r} is not an H3 cell"))
            return []
        if h3.get_resolution(value) != zones.resolution:
            report.reject(
                RowError(
                    obs.row,
                    "zone",
                    f"H3 cell at resolution {h3.get_resolution(value)}, the hub uses {zones.resolution}",
                )
            )
            return []
        lat, lon = h3.cell_to_latlng(value)
        name = zones.polygon(lat, lon)
        return [h3_key(value)] + ([f"poly:{name}"] if name else [])
    names = {p.name for p in zones.polygons}
    if value not in names:
        report.reject(
            RowError(obs.row, "zone", f"area {value[:40]!r} is not a known zone ({len(names)} zones loaded)")
        )
        return []
    # Areas map to their polygon only: spreading a day's count over H3 cells would invent precision.
    return [f"poly:{value}"]


def aggregate(observations: Iterable[Observation], zones: ZoneIndex, report: ImportReport) -> list[CubeRow]:
    """Sum observations per zone key, hour, source and category."""
    totals: dict[tuple[str, int, str, str, int], float] = defaultdict(float)
    for obs in observations:
        keys = _zone_keys(obs, zones, report)
        if not keys:
            continue
        report.imported += 1
        for key in keys:
            totals[(key, obs.hour, obs.source, obs.category, obs.span_h)] += obs.count
    return [CubeRow(z, h, s, c, n, span) for (z, h, s, c, span), n in totals.items()]


def import_file(
    store: Store,
    connector_name: str,
    path: Path,
    mapping: Mapping,
    zones: ZoneIndex,
    *,
    progress: Callable[[int], None] | None = None,
    **options: Any,
) -> ImportReport:
    """Read ``path`` with the connector, map to zones, add to the cube; returns the report.

    Raises:
        ValueError: unknown connector, or a file the connector cannot read at all.
    """
    connector = CONNECTORS.get(connector_name)
    if connector is None:
        raise ValueError(f"unknown source {connector_name!r}; sources: {', '.join(CONNECTORS)}")
    if mapping.connector != connector_name:
        raise ValueError(
            f"{path.name}: the mapping ({mapping.description or mapping.source}) is for source "
            f"{mapping.connector!r}, not {connector_name!r}: run `vigie hub import {mapping.connector} …`, "
            f"or pass a {connector_name} mapping"
        )
    report = ImportReport(source=mapping.source, file=path.name)
    stream = connector.read(path, mapping, report, **options)

    def counted() -> Iterable[Observation]:
        for i, obs in enumerate(stream, start=1):
            if progress is not None and i % 2000 == 0:
                progress(report.rows)
            yield obs

    rows = aggregate(counted(), zones, report)
    if progress is not None:
        progress(report.rows)
    if not rows:
        # Nothing to store: do not record the file either, or the same file imported again once its
        # mapping is fixed (time_format, categories) would be refused as "already imported".
        return report
    summary = {k: v for k, v in asdict(report).items() if k != "errors"}
    summary["errors"] = [str(e) for e in report.errors]
    added = store.record_import(mapping.source, file_sha256(path), path.name, summary, rows, time.time())
    report.duplicate_file = not added
    return report
