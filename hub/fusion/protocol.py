"""The standard evaluation protocol for hot-spot forecasts: pure functions, no I/O.

* **Study area**, fixed in advance: the H3 cells of the city's boundary (GeoJSON) or of
  the convex hull of *all* incidents of the file, never the cells the training data
  happen to touch (that would make the area, so the PAI, depend on the training period).
* **Periods** in the city's time zone: calendar weeks Monday 00:00 → Monday 00:00, or
  days midnight → midnight, local time (DST-aware: a period is 167, 168 or 169 hours).
* **Flagging**: the ``k = max(1, ⌊share · n⌋)`` best cells; ties broken by the cell id
  (deterministic, documented), never at random.
* **PAI** = hit rate ÷ *actual* flagged share ``k / n`` (not the nominal share);
  **PEI** = hits ÷ the oracle's hits with the same ``k`` (the test period's own counts).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

import h3
import numpy as np

from hub.fusion.zones import Polygon

__all__ = [
    "Horizon",
    "Score",
    "StudyArea",
    "bootstrap_ci",
    "boundary_area",
    "flag",
    "hull_area",
    "local_midnight",
    "periods",
    "score",
]

Horizon = Literal["week", "day"]


@dataclass(frozen=True)
class StudyArea:
    """The cells scored, sorted by id (the tie-break order), and how they were chosen."""

    cells: tuple[str, ...]
    resolution: int
    how: str

    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.cells)}

    @property
    def area_km2(self) -> float:
        return len(self.cells) * float(h3.average_hexagon_area(self.resolution, "km^2"))


def _hull(points: np.ndarray) -> list[tuple[float, float]]:
    """Convex hull (Andrew's monotone chain) of (x, y) points, counter-clockwise."""
    pts = sorted({(float(x), float(y)) for x, y in points})
    if len(pts) < 3:
        return pts

    def cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[float, float]] = []
    upper: list[tuple[float, float]] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def hull_area(lat_lon: np.ndarray, resolution: int) -> StudyArea:
    """Cells of the convex hull of every incident in the file (training and test alike), plus their own cells.

    Raises:
        ValueError: fewer than three distinct points.
    """
    ring = _hull(lat_lon)
    if len(ring) < 3:
        raise ValueError(f"{len(ring)} distinct incident locations: a study area needs at least three")
    cells = set(h3.polygon_to_cells(h3.LatLngPoly(ring), resolution))
    cells.update(str(h3.latlng_to_cell(lat, lon, resolution)) for lat, lon in lat_lon)  # hull edges
    return StudyArea(tuple(sorted(cells)), resolution, "convex hull of all incidents")


def boundary_area(polygons: Iterable[Polygon], resolution: int) -> StudyArea:
    """Cells whose centre lies in the city's boundary (a GeoJSON's polygons)."""
    cells: set[str] = set()
    for poly in polygons:
        for outer, holes in poly.parts:
            shape = h3.LatLngPoly([(y, x) for x, y in outer], *[[(y, x) for x, y in h] for h in holes])
            cells.update(h3.polygon_to_cells(shape, resolution))
    if not cells:
        raise ValueError(f"the boundary holds no H3 cell at resolution {resolution}: use a finer resolution")
    return StudyArea(tuple(sorted(cells)), resolution, "city boundary")


def local_midnight(day: dt.date, tz: ZoneInfo) -> int:
    """Epoch seconds of local midnight starting ``day``."""
    return int(dt.datetime.combine(day, dt.time(), tzinfo=tz).timestamp())


def periods(until: dt.date, count: int, horizon: Horizon, tz: ZoneInfo) -> list[tuple[int, int]]:
    """``count`` consecutive test periods starting at local midnight of ``until`` (a Monday for weeks).

    Raises:
        ValueError: a weekly protocol that does not start on a Monday, or ``count < 1``.
    """
    if count < 1:
        raise ValueError(f"--weeks {count}: choose at least one test period")
    if horizon == "week" and until.weekday() != 0:
        monday = until - dt.timedelta(days=until.weekday())
        later = monday + dt.timedelta(days=7)
        raise ValueError(f"--until {until}: calendar weeks start on a Monday; use {monday} or {later}")
    step = 7 if horizon == "week" else 1
    days = [until + dt.timedelta(days=i * step) for i in range(count + 1)]
    return [(local_midnight(a, tz), local_midnight(b, tz)) for a, b in itertools.pairwise(days)]


def flag(scores: np.ndarray, share: float) -> np.ndarray:
    """Indices of the ``max(1, ⌊share·n⌋)`` highest scores; ties go to the lower index (the lower cell id)."""
    k = max(1, int(share * len(scores) + 1e-9))
    order = np.lexsort((np.arange(len(scores)), -scores))
    return order[:k]


@dataclass(frozen=True)
class Score:
    hit_rate: float
    pai: float
    pei: float
    flagged_share: float


def score(scores: np.ndarray, actual: np.ndarray, share: float) -> Score:
    """Hit rate, PAI (÷ the actual flagged share) and PEI (÷ the oracle's hits) of one period."""
    picked = flag(scores, share)
    total = float(actual.sum())
    flagged_share = len(picked) / len(scores)
    if total <= 0:
        return Score(0.0, 0.0, 0.0, flagged_share)
    hits = float(actual[picked].sum())
    best = float(np.sort(actual)[::-1][: len(picked)].sum())
    return Score(hits / total, hits / total / flagged_share, hits / best if best else 0.0, flagged_share)


def bootstrap_ci(values: Sequence[float], draws: int = 4000, seed: int = 11) -> tuple[float, float, float]:
    """Mean and 95 % bootstrap interval of per-period values (periods resampled with replacement)."""
    v = np.asarray(values, dtype=float)
    if not v.size:
        return 0.0, 0.0, 0.0
    means = np.random.default_rng(seed).choice(v, size=(draws, v.size), replace=True).mean(axis=1)
    return float(v.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))
