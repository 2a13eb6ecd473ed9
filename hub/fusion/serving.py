"""The hub serving a tuned blend: the cube's target incidents → its features → expected counts per cell."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from zoneinfo import ZoneInfo

import h3
import numpy as np

from hub.fusion.baselines import Events, centres_km, feature_matrix, neighbour_index
from hub.fusion.blend import BlendParams
from hub.fusion.evaluate import local_hours_of_week

__all__ = ["blend_forecast", "cube_events"]


def cube_events(
    rows: Iterable[dict[str, Any]], excluded: set[str], tz: ZoneInfo, before: int
) -> Events | None:
    """The target incidents of the hourly H3 cube rows before ``before``, on the cells seen and their
    neighbours (the hub's area: what the blend is fitted and served on); ``None`` without any."""
    kept = [
        r
        for r in rows
        if r["zone"].startswith("h3:")
        and r.get("span_h", 1) == 1
        and f"{r['source']}:{r['category']}" not in excluded
        and r["hour"] < before
    ]
    if not kept:
        return None
    seen = {r["zone"][3:] for r in kept}
    cells = sorted(seen | {n for c in seen for n in h3.grid_ring(c, 1)})
    index = {c: i for i, c in enumerate(cells)}
    kept.sort(key=lambda r: r["hour"])
    times = np.array([r["hour"] for r in kept], dtype=np.int64)
    hows = {h: int(local_hours_of_week(h, h + 3600, tz)[0]) for h in set(times.tolist())}
    return Events(
        time=times,
        cell=np.array([index[r["zone"][3:]] for r in kept], dtype=np.int64),
        weight=np.array([float(r["n"]) for r in kept]),
        how=np.array([hows[int(t)] for t in times], dtype=np.int64),
        n_cells=len(cells),
        centres_km=centres_km(cells),
        neighbours=neighbour_index(cells),
        cells=tuple(cells),
    )


def blend_forecast(
    params: BlendParams, rows: Iterable[dict[str, Any]], excluded: set[str], start: int, stop: int
) -> dict[str, float]:
    """Expected incidents per cell over ``[start, stop)`` from the hourly H3 cube rows before ``start``."""
    tz = ZoneInfo(params.timezone)
    events = cube_events(rows, excluded, tz, start)
    if events is None:
        return {}
    features = feature_matrix(
        events, params.features, start, stop, local_hours_of_week(start, stop, tz), params.kde_bandwidth_km
    )
    return {c: float(v) for c, v in zip(events.cells, params.predict(features), strict=True)}
