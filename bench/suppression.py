#!/usr/bin/env python3
"""Secondary suppression on Houston: the layer's greedy choice against an optimal one (MILP per month tree).

Imports March 2010 of Houston's incidents (``/work/shared/data/incidents``, H3 resolution
8, as ``tests/test_dashboard.py`` does), protects every police series with
``hub/disclosure/tree.py`` (greedy), then solves each month tree where the greedy pass hid a
cell of at least k again with ``scipy.optimize.milp`` (HiGHS, 2 s per tree): hide as little
count as possible, subject to "no equation of the tree (parent = Σ children) holds exactly
one hidden node", fixing every cell under k hidden. The MILP's choice is then checked with
the layer's own exact bounds; if a cell under k is still pinned, the greedy widening
finishes it (so both choices meet the same rule). It prints what each serves: weekly cells
(the dashboard's map), hours, and the incidents left in hidden cells.

    .venv/bin/python bench/suppression.py [--k 3] [--tz America/Chicago]
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from hub.disclosure.calendar import CityCalendar
from hub.disclosure.tree import Node, _Tree, pinned
from hub.fusion.importer import import_file
from hub.fusion.observation import load_mapping
from hub.fusion.zones import ZoneIndex
from hub.storage import CubeQuery, SQLiteStore, walk_cube

ROOT = Path(__file__).resolve().parent.parent
HOUSTON = Path("/work/shared/data/incidents/houston_crime_2010_ggmap.csv.gz")


def finish(tree: _Tree, hidden: set[Node], k: int) -> set[Node]:
    """The layer's loop (``protect_series``): widen until no cell under k is pinned."""
    for _ in range(len(tree.value) + 1):
        lo, hi = tree.bounds(hidden)
        bad = sorted(x for x in hidden if tree.value[x] < k and pinned(lo[x], hi[x], k))
        if not bad:
            return hidden
        if not any([tree.widen(x, hidden) for x in bad]):
            return set(tree.value)
    return hidden


def optimal(tree: _Tree, k: int, limit_s: float) -> set[Node] | None:
    nodes = sorted(tree.value)
    col = {x: i for i, x in enumerate(nodes)}
    rows = []
    for p, kids in tree.children.items():
        eq = [p, *kids]
        for x in eq:  # x hidden ⇒ another node of its equation hidden: h_x - Σ h_others ≤ 0
            row = np.zeros(len(nodes))
            row[col[x]] = 1.0
            for y in eq:
                if y != x:
                    row[col[y]] -= 1.0
            rows.append(row)
    lower = np.array([1.0 if tree.value[x] < k else 0.0 for x in nodes])
    cost = np.array([tree.value[x] + 0.01 for x in nodes])  # least count hidden (τ-ARGUS's default)
    cons = [LinearConstraint(np.array(rows), -np.inf, 0.0)] if rows else []
    res = milp(cost, integrality=np.ones(len(nodes)), bounds=Bounds(lower, np.ones(len(nodes))),
               constraints=cons, options={"time_limit": limit_s})  # fmt: skip
    if res.x is None:
        return None
    return {x for x in nodes if res.x[col[x]] > 0.5}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--tz", default="America/Chicago")
    ap.add_argument("--limit-s", type=float, default=2.0)
    args = ap.parse_args()
    cal = CityCalendar(args.tz)
    with tempfile.TemporaryDirectory() as folder:
        month = Path(folder) / "houston-2010-03.csv"
        with gzip.open(HOUSTON, "rt", encoding="utf-8") as src, month.open("w") as out:
            for i, line in enumerate(src):
                if i == 0 or line.startswith("2010-03"):
                    out.write(line)
        store = SQLiteStore(Path(folder) / "hub.sqlite")
        mapping = load_mapping(ROOT / "hub/fusion/mappings/houston_police.yaml")
        import_file(store, "police", month, mapping, ZoneIndex(8))
        rows = list(walk_cube(store, CubeQuery(zone_prefix="h3:")))
    series: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for r in rows:
        hours = series[(r["zone"], r["category"])]
        hours[r["hour"]] = hours.get(r["hour"], 0.0) + r["n"]
    totals = {"greedy": defaultdict(float), "optimal": defaultdict(float)}
    solved = timed_out = trees_with_secondary = 0
    spent = 0.0
    for hours in series.values():
        tree = _Tree(hours, cal)
        greedy = finish(tree, {x for x, v in tree.value.items() if v < args.k}, args.k)
        best = greedy
        if any(tree.value[x] >= args.k for x in greedy):
            trees_with_secondary += 1
            t0 = time.perf_counter()
            found = optimal(tree, args.k, args.limit_s)
            spent += time.perf_counter() - t0
            if found is None:
                timed_out += 1
            else:
                solved += 1
                found = finish(tree, found, args.k)
                if sum(tree.value[x] for x in found) < sum(tree.value[x] for x in greedy):
                    best = found
        for name, hidden in (("greedy", greedy), ("optimal", best)):
            t = totals[name]
            for x, v in tree.value.items():
                t[f"{x[0]} cells"] += 1
                if x in hidden:
                    t[f"{x[0]} hidden"] += 1
                    t[f"{x[0]} hidden incidents"] += v
                    if v >= args.k:
                        t[f"{x[0]} hidden ≥ k"] += 1
    print(f"Houston 2010-03, H3 res 8, k = {args.k}, {args.tz}: {len(series)} series, {len(rows)} cube rows")
    print(f"trees with a secondary cell: {trees_with_secondary}; MILP solved {solved}, "
          f"no answer {timed_out}, {spent:.1f} s in all")  # fmt: skip
    g, o = totals["greedy"], totals["optimal"]
    for level in ("hour", "day", "week", "month"):
        cells = g[f"{level} cells"]
        served = (cells - g[f"{level} hidden"], cells - o[f"{level} hidden"])
        secondary = (g[f"{level} hidden ≥ k"], o[f"{level} hidden ≥ k"])
        mass = (g[f"{level} hidden incidents"], o[f"{level} hidden incidents"])
        print(f"{level:>5}: {cells:.0f} cells; served greedy {served[0]:.0f} / optimal {served[1]:.0f}; "
              f"hidden ≥ k greedy {secondary[0]:.0f} / optimal {secondary[1]:.0f}; "
              f"incidents in hidden cells greedy {mass[0]:.0f} / optimal {mass[1]:.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
