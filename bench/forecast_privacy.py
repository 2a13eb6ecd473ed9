#!/usr/bin/env python3
"""What protecting the forecasts costs: the model learnt on the served table against the one on raw counts.

Imports January to March 2010 of Houston's incidents (``/work/shared/data/incidents``) at one
H3 resolution, learns up to 2010-03-24 05:00 UTC as the hub does (``learn_pending``), then
learns the served model (``hub/fusion/served.py``) under k, and scores both forecasts of the
next 168 hours against the incidents that came: share of them in the top 5 % of cells, and
the sum of what each expected. Numbers in docs/privacy.md.

    .venv/bin/python bench/forecast_privacy.py [--resolution 8] [--k 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import tempfile
import time
from pathlib import Path

import numpy as np

from hub.disclosure.calendar import CityCalendar
from hub.fusion.importer import import_file
from hub.fusion.observation import load_mapping
from hub.fusion.served import served_model
from hub.fusion.service import learn_pending, load_model
from hub.fusion.zones import ZoneIndex
from hub.storage import CubeQuery, SQLiteStore, walk_cube

ROOT = Path(__file__).resolve().parent.parent
HOUSTON = Path("/work/shared/data/incidents/houston_crime_2010_ggmap.csv.gz")
CUT = int(dt.datetime(2010, 3, 24, 5, tzinfo=dt.UTC).timestamp())


def top_share(expected: np.ndarray, came: np.ndarray, frac: float = 0.05) -> float:
    top = np.argsort(-expected, kind="stable")[: max(1, int(frac * len(expected)))]
    return float(came[top].sum() / came.sum())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=8)
    ap.add_argument("--k", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        quarter = Path(folder) / "houston-2010-q1.csv"
        with gzip.open(HOUSTON, "rt", encoding="utf-8") as src, quarter.open("w") as out:
            for i, line in enumerate(src):
                if i == 0 or line.startswith(("2010-01", "2010-02", "2010-03")):
                    out.write(line)
        store = SQLiteStore(Path(folder) / "hub.sqlite")
        mapping = load_mapping(ROOT / "hub/fusion/mappings/houston_police.yaml")
        import_file(store, "police", quarter, mapping, ZoneIndex(args.resolution))
        learn_pending(store, now=CUT + 3600)
        raw = load_model(store)
        t0 = time.perf_counter()
        served = served_model(store, raw, args.k, CityCalendar("America/Chicago"))
        spent = time.perf_counter() - t0
        assert raw.watermark is not None
        start = raw.watermark + 3600
        came: dict[str, float] = {}
        week = CubeQuery(zone_prefix="h3:", sources=("police",), start=start, end=start + 168 * 3600)
        for r in walk_cube(store, week):
            if f"police:{r['category']}" not in raw.excluded:
                came[r["zone"][3:]] = came.get(r["zone"][3:], 0.0) + r["n"]
    by_raw, by_served = raw.forecast(168, start), served.forecast(168, start)
    cells = sorted(set(by_raw) | set(by_served) | set(came))
    y = np.array([came.get(c, 0.0) for c in cells])
    a = np.array([by_raw.get(c, 0.0) for c in cells])
    b = np.array([by_served.get(c, 0.0) for c in cells])
    print(f"resolution {args.resolution}, k = {args.k}: served model learnt in {spent:.1f} s; the week from "
          f"{dt.datetime.fromtimestamp(start, dt.UTC):%Y-%m-%d %H:%M} UTC: {y.sum():.0f} incidents in "
          f"{len(cells)} cells")  # fmt: skip
    print(
        f"top 5 % of cells hold: raw model {top_share(a, y):.3f}, served model {top_share(b, y):.3f}; "
        f"expected in all: raw {a.sum():.0f}, served {b.sum():.0f}"
    )


if __name__ == "__main__":
    main()
