#!/usr/bin/env python3
"""LightGBM (Poisson objective) against the linear blend, under the standard protocol (docs/fusion.md).

Features per cell and period: the eight baselines, near repeats (the cell's last 1, 3, 7 days),
spill-over (the six neighbours' last 1, 3, 7 days) and, at the daily horizon, the local day
of week (the ``seasonal`` baseline already carries each cell's hour-of-week profile). Two
boosters: ``gbm`` from the features alone, ``gbm+blend`` boosting a multiplicative correction
of the tuned linear blend (its log as the starting score). Each is trained on the
``--fit-weeks`` weeks before the validation window, checked on the validation window (the
guard: kept only if its validation hit rate is at least the blend's), then retrained on fit +
validation and scored on the test periods with the backtest's own baselines, blend and oracle.
Fixed hyper-parameters, chosen before looking at any test period (robust, not tuned).

    .venv/bin/python bench/forecast_boosted.py FILE --mapping houston_police --until 2010-05-03

LightGBM is not a dependency of the project (it did not gain, docs/fusion.md): install it
beside the project, e.g. ``pip install --target /tmp/lgbm lightgbm==4.7.0`` and pass
``--lightgbm-path /tmp/lgbm``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from hub.fusion.baselines import BASELINES, Events, feature_matrix
from hub.fusion.blend import BlendParams
from hub.fusion.connectors import CONNECTORS
from hub.fusion.evaluate import SHARES, Evaluation, build_events, evaluate, local_hours_of_week
from hub.fusion.observation import ImportReport, load_mapping
from hub.fusion.protocol import bootstrap_ci, periods, score
from hub.fusion.report import best_baseline
from hub.fusion.runner import study_area

FEATURES = (*BASELINES, "recent:1", "recent:3", "recent:7", "neighbours:1", "neighbours:3", "neighbours:7")
LGB_PARAMS = {
    "objective": "poisson",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 200,
    "feature_fraction": 0.8,
    "lambda_l2": 1.0,
    "verbose": -1,
    "num_threads": 2,
    "seed": 7,
    "deterministic": True,
}
ROUNDS = 200


def _matrix(ev: Events, a: int, b: int, tz: ZoneInfo, params: BlendParams, horizon: str) -> np.ndarray:
    hows = local_hours_of_week(a, b, tz)
    x = feature_matrix(ev, FEATURES, a, b, hows, params.kde_bandwidth_km)
    if horizon == "day":
        dow = np.full((ev.n_cells, 1), dt.datetime.fromtimestamp(a, tz).weekday(), dtype=float)
        x = np.hstack([x, dow])
    return x


def _blend(ev: Events, a: int, b: int, tz: ZoneInfo, params: BlendParams) -> np.ndarray:
    hows = local_hours_of_week(a, b, tz)
    return params.predict(feature_matrix(ev, params.features, a, b, hows, params.kde_bandwidth_km))


def _rows(
    ev: Events, spans: list[tuple[int, int]], tz: ZoneInfo, params: BlendParams, horizon: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, ys, offs = [], [], []
    for a, b in spans:
        xs.append(_matrix(ev, a, b, tz, params, horizon))
        ys.append(ev.counts(a, b))
        offs.append(np.log(np.maximum(_blend(ev, a, b, tz, params), 1e-6)))
    return np.vstack(xs), np.concatenate(ys), np.concatenate(offs)


def _train(lgb: Any, x: np.ndarray, y: np.ndarray, init: np.ndarray | None) -> Any:
    data = lgb.Dataset(x, label=y, init_score=init, free_raw_data=False)
    return lgb.train(LGB_PARAMS, data, num_boost_round=ROUNDS)


def _predict(booster: Any, x: np.ndarray, init: np.ndarray | None) -> np.ndarray:
    raw = booster.predict(x, raw_score=True)
    return np.asarray(np.exp(raw + (init if init is not None else 0.0)))


def _hits(scores: np.ndarray, actual: np.ndarray) -> float:
    return sum(score(scores, actual, s).hit_rate for s in SHARES)


def run(ev: Events, result: Evaluation, tz: ZoneInfo, until: dt.date, fit_weeks: int, lgb: Any) -> list[str]:
    """Add ``gbm`` and ``gbm+blend`` to ``result`` (per test period PAI) and return the report lines."""
    horizon, params = result.horizon, result.params
    step = 7 if horizon == "week" else 1
    valid = periods(until - dt.timedelta(weeks=4), 28 // step, horizon, tz)
    fit = periods(until - dt.timedelta(weeks=4 + fit_weeks), 7 * fit_weeks // step, horizon, tz)
    xf, yf, of = _rows(ev, fit, tz, params, horizon)
    xv, yv, ov = _rows(ev, valid, tz, params, horizon)
    lines = []
    n = ev.n_cells
    for name, use_init in (("gbm", False), ("gbm+blend", True)):
        booster = _train(lgb, xf, yf, of if use_init else None)
        pv = _predict(booster, xv, ov if use_init else None)
        q_gbm = sum(_hits(pv[i * n : (i + 1) * n], yv[i * n : (i + 1) * n]) for i in range(len(valid)))
        q_blend = sum(
            _hits(np.exp(ov[i * n : (i + 1) * n]), yv[i * n : (i + 1) * n]) for i in range(len(valid))
        )
        booster = _train(
            lgb, np.vstack([xf, xv]), np.concatenate([yf, yv]), np.concatenate([of, ov]) if use_init else None
        )
        result.pai[name] = {s: [] for s in SHARES}
        for a, b in result.periods:
            actual = ev.counts(a, b)
            if actual.sum() <= 0:
                continue
            init = np.log(np.maximum(_blend(ev, a, b, tz, params), 1e-6)) if use_init else None
            pred = _predict(booster, _matrix(ev, a, b, tz, params, horizon), init)
            for s in SHARES:
                result.pai[name][s].append(score(pred, actual, s).pai)
        lines.append(
            f"{horizon} {name}: validation hit rate (1 % + 5 %) {q_gbm / len(valid):.4f} vs blend "
            f"{q_blend / len(valid):.4f} → the guard {'keeps it' if q_gbm >= q_blend else 'keeps the blend'}"
        )
        for s in SHARES:
            best = best_baseline(result, s)
            diff = np.array(result.pai[name][s]) - np.array(result.pai[best][s])
            mean, lo, hi = bootstrap_ci(diff.tolist())
            room = result.mean_pai("oracle", s) - result.mean_pai(best, s)
            gbm, top = float(np.mean(result.pai[name][s])), result.mean_pai(best, s)
            lines.append(
                f"  PAI @{s * 100:g} %: {name} {gbm:.2f}, blend {result.mean_pai('model', s):.2f}, "
                f"best ({best}) {top:.2f}, oracle {result.mean_pai('oracle', s):.2f}; {name} − best "
                f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}]; gap closed {(gbm - top) / room * 100:+.0f} %"
            )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", type=Path)
    ap.add_argument("--mapping", required=True)
    ap.add_argument("--until", required=True, type=dt.date.fromisoformat)
    ap.add_argument("--weeks", type=int, required=True)
    ap.add_argument("--fit-weeks", type=int, default=8)
    ap.add_argument("--horizon", choices=("week", "day", "both"), default="both")
    ap.add_argument("--lightgbm-path", help="a folder holding lightgbm (pip install --target)")
    args = ap.parse_args()
    if args.lightgbm_path:
        sys.path.append(args.lightgbm_path)  # after the project's own packages: its numpy wins
    try:
        import lightgbm as lgb
    except ImportError:
        sys.exit("bench: lightgbm is not installed; pip install --target /tmp/lgbm lightgbm==4.7.0 and pass "
                 "--lightgbm-path /tmp/lgbm")  # fmt: skip
    shipped = Path(__file__).resolve().parents[1] / "hub" / "fusion" / "mappings" / f"{args.mapping}.yaml"
    mapping = load_mapping(shipped if shipped.exists() else Path(args.mapping))
    tz = mapping.local_zone
    report = ImportReport(mapping.source, args.file.name)
    observations = list(CONNECTORS[mapping.connector].read(args.file, mapping, report))
    area = study_area(observations, 8, None)
    excluded = [f"{mapping.source}:{c}" for c in mapping.exclude_from_training]
    ev, _ = build_events(observations, area, tz, excluded)
    for horizon in ("week", "day") if args.horizon == "both" else (args.horizon,):
        began = time.process_time()
        count = args.weeks if horizon == "week" else 7 * args.weeks
        result = evaluate(ev, area, until=args.until, count=count, horizon=horizon, tz=tz)
        for line in run(ev, result, tz, args.until, args.fit_weeks, lgb):
            print(line, flush=True)
        print(f"  ({time.process_time() - began:.0f} s of CPU)", flush=True)


if __name__ == "__main__":
    main()
