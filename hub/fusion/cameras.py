"""Cameras and sensors into the cube: their hourly roll-ups, placed through their site's location.

A camera's counts are already anonymised and aggregated on the device; the hub
places them at the site's location (``location: [lat, lon]`` in the site file,
or a camera's own ``location``) and adds them to the cube as source ``camera``
(people, vehicles…: the mean of the windows' peak counts over the hour;
crossings: the hour's total) or ``sensor`` (sound level, air quality…: the hour's
mean). Folding is idempotent: an hour's rows are replaced, not added, each time.

A count roll-up goes into the cube only when the analysts' roll-ups serve its total
(``hub/disclosure/floor.py::protect_rollup``, the one rule for both): otherwise, with one
camera in a cell, the cube's hour would be the roll-up total the floor hid, and minus
the windows served it would give a floored window back (``docs/privacy.md``). Such an
hour adds nothing to its cell (its row is set to 0, so an earlier fold does not linger).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from hub.disclosure.floor import protect_rollup
from hub.fusion.zones import ZoneIndex
from hub.storage import CubeRow, RollupQuery, Store, walk_rollups

__all__ = ["camera_cube_rows", "fold_cameras", "load_locations", "locations_from_sites", "save_locations"]

STATE = "fusion.camera_locations"


def locations_from_sites(paths: Iterable[Path]) -> dict[str, tuple[float, float]]:
    """``site/device`` → (lat, lon) from site files (a camera's ``location`` wins over the site's).

    Raises:
        ValueError: a site file without a location for one of its cameras.
    """
    out: dict[str, tuple[float, float]] = {}
    for path in paths:
        data = yaml.safe_load(path.read_text()) or {}
        site_loc = data.get("location")
        for cam in data.get("cameras", []):
            loc = cam.get("location", site_loc)
            if not loc or len(loc) != 2:
                raise ValueError(
                    f"{path}: camera {cam.get('device')!r} has no location (set `location: [lat, lon]`)"
                )
            out[f"{data['site']}/{cam['device']}"] = (float(loc[0]), float(loc[1]))
    return out


def save_locations(store: Store, locations: dict[str, tuple[float, float]]) -> None:
    known = load_locations(store)
    known.update(locations)
    store.save_state(STATE, json.dumps(known), time.time())


def load_locations(store: Store) -> dict[str, tuple[float, float]]:
    body = store.load_state(STATE)
    return {k: (v[0], v[1]) for k, v in json.loads(body).items()} if body else {}


def _category(metric: str) -> tuple[str, str, str] | None:
    """(source, category, how) for a roll-up metric; how = "mean" or "sum"; None to leave out."""
    kind, _, name = metric.partition(":")
    if kind == "peak":
        return "camera", name, "mean"
    if kind in ("forward", "backward"):
        return "camera", f"crossings:{name}", "sum"
    if kind == "alert":
        return "camera", metric, "sum"
    if kind in ("windows", "frames", "suppressed") or not name:
        return None
    return "sensor", metric, "mean"  # measurement quantities: sound_level:laeq, pm2_5:mean, …


def camera_cube_rows(
    rollups: Iterable[dict[str, Any]], locations: dict[str, tuple[float, float]], zones: ZoneIndex, k: int
) -> tuple[list[CubeRow], set[str]]:
    """Cube rows from roll-up rows whose total analysts may read under ``k``; also the devices with no
    known location (left out)."""
    totals: dict[tuple[str, int, str, str], float] = defaultdict(float)
    unplaced: set[str] = set()
    for r in rollups:
        what = _category(r["metric"])
        if what is None:
            continue
        device = f"{r['site']}/{r['device']}"
        where = locations.get(device)
        if where is None:
            unplaced.add(device)
            continue
        source, category, how = what
        value = r["total"] / r["n"] if how == "mean" and r["n"] else r["total"]
        if protect_rollup(r, k)["total"] is None:
            value = 0.0  # the floor hides this total from analysts: the cube must not carry it either
        for key in zones.keys(*where):
            totals[(key, r["hour"], source, category)] += value
    return [CubeRow(z, h, s, c, n) for (z, h, s, c), n in totals.items()], unplaced


def fold_cameras(store: Store, zones: ZoneIndex, *, k: int, since: int | None = None) -> tuple[int, set[str]]:
    """Put the roll-ups since ``since`` into the cube (replacing those hours), under the hub's ``k``;
    returns (rows, unplaced)."""
    locations = load_locations(store)
    rollups = list(walk_rollups(store, RollupQuery(since=since, limit=100_000)))
    rows, unplaced = camera_cube_rows(rollups, locations, zones, k)
    store.replace_cube(rows)
    return len(rows), unplaced
