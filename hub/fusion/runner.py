"""``vigie hub backtest`` as a library call: read the file, fix the study area, evaluate each horizon, report.

The CLI only parses its options into a ``BacktestRequest``: the numbers are the same from both.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hub.fusion.blend import BlendParams
from hub.fusion.connectors import CONNECTORS
from hub.fusion.evaluate import Evaluation, build_events, evaluate
from hub.fusion.observation import ImportReport, Observation, load_mapping
from hub.fusion.protocol import Horizon, StudyArea, boundary_area, hull_area
from hub.fusion.report import summary_lines, write_report
from hub.fusion.zones import load_boundary

__all__ = ["BacktestOutcome", "BacktestRequest", "run_backtest", "study_area"]


@dataclass(frozen=True)
class BacktestRequest:
    file: Path
    mapping: Path
    until: dt.date
    connector: str | None = None
    weeks: int | None = None
    horizons: tuple[Horizon, ...] = ("week", "day")
    boundary: Path | None = None
    boundary_name: str | None = None
    resolution: int = 8
    out: Path | None = None


@dataclass
class BacktestOutcome:
    evaluations: list[Evaluation] = field(default_factory=list)
    params: list[BlendParams] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def study_area(observations: list[Observation], resolution: int, boundary: Path | None) -> StudyArea:
    """The boundary's cells, else the hull of every incident in the file: never of the training part alone."""
    if boundary is not None:
        return boundary_area(load_boundary(boundary), resolution)
    points = np.array([(o.lat, o.lon) for o in observations if o.lat is not None and o.lon is not None])
    return hull_area(points, resolution)


def _weeks_left(observations: list[Observation], until: dt.date, tz: dt.tzinfo) -> int:
    last = dt.datetime.fromtimestamp(max(o.hour for o in observations), tz).date()
    return max((last - until).days + 1, 0) // 7


def run_backtest(request: BacktestRequest) -> BacktestOutcome:
    """Evaluate each horizon; write reports and ``blend-<horizon>.json`` under ``request.out``.

    Raises:
        ValueError: naming what to change (short history, no category left, data outside the area, …).
    """
    mapping = load_mapping(request.mapping)
    tz = mapping.local_zone
    report = ImportReport(mapping.source, request.file.name)
    connector = CONNECTORS[request.connector or mapping.connector]
    observations = list(connector.read(request.file, mapping, report))
    if not observations:
        raise ValueError(
            f"{request.file}: no incident read ({report.rejected} rows rejected); check the mapping"
        )
    area = study_area(observations, request.resolution, request.boundary)
    excluded = [f"{mapping.source}:{c}" for c in mapping.exclude_from_training]
    events, outside = build_events(observations, area, tz, excluded)
    if outside > 0.5 * (outside + len(events.time)):
        raise ValueError(
            f"{outside} incidents fall outside the study area ({len(events.time)} inside): the boundary does "
            "not hold the data; use the city's own boundary, or none (the hull of all incidents)"
        )
    weeks = request.weeks if request.weeks is not None else _weeks_left(observations, request.until, tz)
    if weeks < 1:
        end = dt.datetime.fromtimestamp(max(o.hour for o in observations), tz).date()
        raise ValueError(
            f"--until {request.until}: no whole week between it and the end of the data ({end}); "
            "choose an earlier --until, or --weeks 1 or more"
        )
    outcome = BacktestOutcome(lines=[f"{len(observations)} incidents, {report.rejected} rows rejected"])
    for horizon in request.horizons:
        count = weeks if horizon == "week" else 7 * weeks
        ev = evaluate(events, area, until=request.until, count=count, horizon=horizon, tz=tz)
        ev.outside = outside
        outcome.evaluations.append(ev)
        outcome.params.append(ev.params)
        outcome.lines += [f"{horizon}: {line}" for line in summary_lines(ev)]
        if request.out is not None:
            path = write_report(ev, request.out, request.file.name)
            (request.out / f"blend-{horizon}.json").write_text(ev.params.to_json())
            outcome.lines.append(f"report: {path}")
    return outcome
