"""The simple baselines a hot-spot forecast must beat, as pure functions of past incidents.

Each feature is the *expected number of incidents per cell over the period*
``[start, stop)``, computed only from incidents before ``start``:

* ``all`` — every past incident (the long-term hot spots; often the one to beat);
* ``last:N`` — the last N days;
* ``ew:D`` — exponentially weighted counts, half-life D days;
* ``kde`` — a Gaussian kernel density over all past incidents (bandwidth chosen on training data);
* ``seasonal`` — the cell's hour-of-week profile (local time), shrunk to the city's profile;
* ``recent:N`` — near repeats: the last N days in the cell (a short memory);
* ``neighbours:N`` — spill-over: the mean of the six neighbouring cells over the last N days.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import h3
import numpy as np

__all__ = ["BASELINES", "Events", "centres_km", "feature", "feature_matrix", "kde_scores", "neighbour_index"]

HOUR = 3600
DAY = 24 * HOUR
WEEK_H = 168

#: The baselines reported side by side (the blend may also use ``recent:*`` and ``neighbours:*``).
BASELINES: tuple[str, ...] = ("all", "last:28", "last:7", "ew:7", "ew:30", "ew:90", "kde", "seasonal")


@dataclass(frozen=True)
class Events:
    """Target incidents sorted by time: epoch s, cell index in the study area, weight, local hour of week."""

    time: np.ndarray
    cell: np.ndarray
    weight: np.ndarray
    how: np.ndarray
    n_cells: int
    centres_km: np.ndarray  # cells × 2, for the KDE
    neighbours: np.ndarray  # cells × 6 indices (-1: outside the area)
    cells: tuple[str, ...] = ()  # the study area's cell ids (for the KDE's truncated kernel)
    history_start: int = field(default=0, init=False)
    kde_cache: dict[float, tuple[int, np.ndarray]] = field(default_factory=dict, compare=False, repr=False)
    kernels: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        start = int(np.quantile(self.time, 0.005)) if self.time.size else 0
        object.__setattr__(self, "history_start", start)

    def kernel(self, bandwidth_km: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cell, source cell, weight) of the Gaussian kernel, truncated at 4 bandwidths (below 0.04 %)."""
        if bandwidth_km not in self.kernels:
            spacing = 2 * float(h3.average_hexagon_edge_length(h3.get_resolution(self.cells[0]), "km"))
            rings = max(1, math.ceil(4 * bandwidth_km / spacing * 1.2))
            index = {c: i for i, c in enumerate(self.cells)}
            pairs = [
                (i, index[n]) for i, c in enumerate(self.cells) for n in h3.grid_disk(c, rings) if n in index
            ]
            rows, cols = (np.array(x, dtype=np.int64) for x in zip(*pairs, strict=True))
            d2 = ((self.centres_km[rows] - self.centres_km[cols]) ** 2).sum(axis=1)
            self.kernels[bandwidth_km] = (rows, cols, np.exp(-d2 / (2 * bandwidth_km**2)))
        return self.kernels[bandwidth_km]

    def counts(self, start: int, stop: int) -> np.ndarray:
        a, b = np.searchsorted(self.time, [start, stop])
        return np.bincount(self.cell[a:b], weights=self.weight[a:b], minlength=self.n_cells)

    @property
    def first(self) -> int:
        """Where the history starts: the 0.5th percentile of incident times, so that a handful of
        incidents reported years late (Toronto's file reaches back to 1966) do not dilute every rate."""
        return self.history_start


def neighbour_index(cells: Sequence[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(cells)}
    out = np.full((len(cells), 6), -1, dtype=np.int64)
    for i, c in enumerate(cells):
        for k, n in enumerate(list(h3.grid_ring(c, 1))[:6]):
            out[i, k] = index.get(n, -1)
    return out


def centres_km(cells: Sequence[str]) -> np.ndarray:
    lat_lon = np.array([h3.cell_to_latlng(c) for c in cells]) if cells else np.zeros((0, 2))
    lat0 = math.radians(float(lat_lon[:, 0].mean())) if len(cells) else 0.0
    return np.column_stack([lat_lon[:, 0] * 111.32, lat_lon[:, 1] * 111.32 * math.cos(lat0)])


def kde_scores(centres: np.ndarray, counts: np.ndarray, bandwidth_km: float) -> np.ndarray:
    """Gaussian kernel density at each cell centre from counts at the same centres (chunked)."""
    out = np.zeros(len(centres))
    support = np.nonzero(counts)[0]
    if not support.size:
        return out
    pts, weights = centres[support], counts[support]
    two_h2 = 2 * bandwidth_km**2
    for start in range(0, len(centres), 512):
        block = centres[start : start + 512]
        d2 = ((block[:, None, :] - pts[None, :, :]) ** 2).sum(axis=2)
        out[start : start + 512] = (np.exp(-d2 / two_h2) * weights[None, :]).sum(axis=1)
    return out


def _kde_until(ev: Events, start: int, bandwidth_km: float) -> np.ndarray:
    """The KDE of every incident before ``start``; it is linear in the counts, so each origin adds only the
    incidents since the previous one (the backtest's origins move forward)."""
    since, dens = ev.kde_cache.get(bandwidth_km, (ev.first, np.zeros(ev.n_cells)))
    if start < since:
        since, dens = ev.first, np.zeros(ev.n_cells)
    if ev.cells:
        rows, cols, weights = ev.kernel(bandwidth_km)
        added = np.bincount(rows, weights=weights * ev.counts(since, start)[cols], minlength=ev.n_cells)
    else:
        added = kde_scores(ev.centres_km, ev.counts(since, start), bandwidth_km)
    dens = dens + added
    ev.kde_cache[bandwidth_km] = (start, dens)
    return dens


def _seasonal(ev: Events, start: int, stop: int, hows: np.ndarray) -> np.ndarray:
    a = int(np.searchsorted(ev.time, start))
    grid = np.zeros((ev.n_cells, WEEK_H))
    np.add.at(grid, (ev.cell[:a], ev.how[:a]), ev.weight[:a])
    weeks = max((start - ev.first) / (WEEK_H * HOUR), 1e-9)
    per_cell = grid.sum(axis=1, keepdims=True)
    city = grid.sum(axis=0)
    profile = city / max(float(city.sum()), 1e-9)  # share of the city's incidents in each hour of week
    # Shrink each cell's sparse hour-of-week counts towards its total spread by the city's profile.
    rate = (grid + per_cell * profile[None, :]) / (2 * weeks)
    return np.asarray(rate[:, hows].sum(axis=1))


def feature(
    ev: Events, name: str, start: int, stop: int, hows: np.ndarray, bandwidth_km: float
) -> np.ndarray:
    """One feature: expected incidents per cell over ``[start, stop)`` from incidents before ``start``.

    ``hows`` are the local hours of week the period covers (one per hour).
    """
    hours = (stop - start) / HOUR
    kind, _, arg = name.partition(":")
    history_h = max((start - ev.first) / HOUR, 1.0)
    if kind == "all":
        return ev.counts(ev.first, start) * hours / history_h
    if kind in ("last", "recent"):
        span = min(float(arg) * DAY, start - ev.first) or DAY
        return ev.counts(int(start - span), start) * hours / (span / HOUR)
    if kind == "ew":
        a = int(np.searchsorted(ev.time, start))
        decay = 0.5 ** ((start - ev.time[:a]) / (float(arg) * DAY))
        w = np.bincount(ev.cell[:a], weights=ev.weight[:a] * decay, minlength=ev.n_cells)
        mass_h = float(arg) * 24 / math.log(2) * (1 - 0.5 ** (history_h / (float(arg) * 24)))
        return np.asarray(w * hours / mass_h)
    if kind == "kde":
        past = ev.counts(ev.first, start)
        dens = _kde_until(ev, start, bandwidth_km)
        return np.asarray(dens * (float(past.sum()) / max(float(dens.sum()), 1e-12)) * hours / history_h)
    if kind == "seasonal":
        return _seasonal(ev, start, stop, hows)
    if kind == "neighbours":
        span = min(float(arg) * DAY, start - ev.first) or DAY
        recent = np.append(ev.counts(int(start - span), start), 0.0)
        return np.asarray(recent[ev.neighbours].mean(axis=1)) * hours / (span / HOUR)
    raise ValueError(
        f"unknown feature {name!r}; features: all, last:N, ew:D, kde, seasonal, recent:N, neighbours:N"
    )


def feature_matrix(
    ev: Events, names: Sequence[str], start: int, stop: int, hows: np.ndarray, bandwidth_km: float
) -> np.ndarray:
    """cells × features."""
    return np.column_stack([feature(ev, n, start, stop, hows, bandwidth_km) for n in names])
