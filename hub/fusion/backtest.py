"""Rolling-origin backtest of the short-term risk forecast against two standard baselines.

Protocol: the online model learns hour by hour up to the first origin (the end
of the training period), then, at each weekly origin, ranks the cells by the
expected number of incidents over the next 7 days, learns that week hour by
hour, and moves on: it is never refitted, exactly as on the hub.

At each origin the baselines rank the same cells:

* **last 28 days**: the number of incidents in the cell over the 28 days before;
* **kernel density (KDE)**: a Gaussian kernel on the distance between cell centres,
  over every incident before the origin; its bandwidth is chosen on the training
  period (the last four training weeks as validation), as a careful analyst would.

Scores: the **hit rate** (share of the week's incidents in the flagged cells) and the
**PAI** (hit rate ÷ share of the area flagged) at 1 % and 5 % of the area. The
area is the set of cells with an incident in the training period and their
neighbours (equal-area H3 cells). Calibration: at each day of the test period,
the forecast probability of at least one incident in each cell in the next 24 h
(``1 - exp(-Λ)``) against what happened.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h3
import numpy as np

from hub.fusion.learning import HOUR, LearnerParams, OnlineModel
from hub.fusion.observation import Observation

__all__ = ["BacktestResult", "kde_scores", "run_backtest"]

WEEK = 7 * 24 * HOUR
DAY = 24 * HOUR
COVERAGES = (0.01, 0.05)


@dataclass
class WeekScore:
    origin: int
    incidents: int
    hits: dict[str, dict[float, float]]  # method → coverage → hit rate


@dataclass
class BacktestResult:
    """Everything the report shows."""

    cells: int
    area_km2: float
    train_incidents: int
    test_incidents: int
    weeks: list[WeekScore] = field(default_factory=list)
    calibration: list[tuple[float, int]] = field(default_factory=list)  # (p, happened)
    flagged: list[set[str]] = field(default_factory=list)  # ours at 5 %, per week
    curves: dict[str, list[float]] = field(default_factory=dict)  # method → mean hit rate per coverage step
    kde_bandwidth_km: float = 0.0
    params: LearnerParams = field(default_factory=LearnerParams)
    excluded: list[str] = field(default_factory=list)

    def mean_hit(self, method: str, coverage: float) -> float:
        return float(np.mean([w.hits[method][coverage] for w in self.weeks]))

    def pai(self, method: str, coverage: float) -> float:
        return self.mean_hit(method, coverage) / coverage

    def paired_ci(self, other: str, coverage: float = 0.05, draws: int = 4000) -> tuple[float, float, float]:
        """Mean weekly PAI difference ours − ``other`` and its 95 % bootstrap interval (weeks resampled)."""
        diff = np.array([(w.hits["ours"][coverage] - w.hits[other][coverage]) / coverage for w in self.weeks])
        rng = np.random.default_rng(11)
        means = rng.choice(diff, size=(draws, len(diff)), replace=True).mean(axis=1)
        return float(diff.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))

    def brier(self) -> float:
        return (
            float(np.mean([(p - y) ** 2 for p, y in self.calibration])) if self.calibration else float("nan")
        )


def _centres(cells: Sequence[str]) -> np.ndarray:
    """Cell centres in km on a local plane (equirectangular around their mean)."""
    lat_lon = np.array([h3.cell_to_latlng(c) for c in cells])
    lat0 = math.radians(float(lat_lon[:, 0].mean()))
    km = 111.32
    return np.column_stack([lat_lon[:, 0] * km, lat_lon[:, 1] * km * math.cos(lat0)])


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


def _hit_rates(
    scores: np.ndarray, actual: np.ndarray, coverages: Iterable[float], tiebreak: np.ndarray
) -> dict[float, float]:
    total = actual.sum()
    order = np.lexsort((tiebreak, -scores))  # highest score first; ties broken by a fixed random key
    out = {}
    for c in coverages:
        k = max(1, round(c * len(scores)))
        out[c] = float(actual[order[:k]].sum() / total) if total else 0.0
    return out


def _flagged(scores: np.ndarray, coverage: float, tiebreak: np.ndarray) -> np.ndarray:
    order = np.lexsort((tiebreak, -scores))
    return order[: max(1, round(coverage * len(scores)))]


def run_backtest(
    observations: Iterable[Observation],
    *,
    train_until: int,
    resolution: int = 8,
    params: LearnerParams | None = None,
    excluded: Iterable[str] = (),
    progress: Callable[[int, int], None] | None = None,
    daily_calibration: bool = True,
) -> BacktestResult:
    """Run the rolling-origin backtest; ``train_until`` is the first origin (epoch seconds)."""
    params = params or LearnerParams()
    events: list[tuple[int, str, str, str]] = []  # (hour, cell, source, category)
    for obs in observations:
        if obs.lat is None or obs.lon is None:
            continue
        events.append(
            (obs.hour, str(h3.latlng_to_cell(obs.lat, obs.lon, resolution)), obs.source, obs.category)
        )
    events.sort()
    excluded_set = set(excluded)
    is_target = [f"{s}:{c}" not in excluded_set for _, _, s, c in events]
    train = [e for e, t in zip(events, is_target, strict=True) if t and e[0] < train_until]
    if not train:
        raise ValueError("no incident before the first origin: choose a later --train-until")
    cells_set = {e[1] for e in train}
    for c in list(cells_set):
        cells_set.update(h3.grid_ring(c, 1))
    cells = sorted(cells_set)
    index = {c: i for i, c in enumerate(cells)}
    centres = _centres(cells)
    rng = np.random.default_rng(7)
    tiebreak = rng.random(len(cells))

    by_hour: dict[int, dict[tuple[str, str, str], float]] = defaultdict(dict)
    for hour, cell, source, category in events:
        key = (cell, source, category)
        by_hour[hour][key] = by_hour[hour].get(key, 0.0) + 1
    last_hour = events[-1][0]
    end = train_until + ((last_hour + HOUR - train_until) // WEEK) * WEEK  # whole weeks only
    test_count = sum(1 for e, t in zip(events, is_target, strict=True) if t and train_until <= e[0] < end)

    # KDE bandwidth: chosen on the last four training weeks.
    ev_hour = np.array([e[0] for e in events], dtype=np.int64)
    ev_cell = np.array([index.get(e[1], -1) for e in events], dtype=np.int64)
    ev_ok = np.array(is_target) & (ev_cell >= 0)

    def target_counts(start: int, stop: int) -> np.ndarray:
        mask = ev_ok & (ev_hour >= start) & (ev_hour < stop)
        return np.bincount(ev_cell[mask], minlength=len(cells)).astype(float)

    first = events[0][0]
    valid_from = train_until - 4 * WEEK
    history = target_counts(first, valid_from)
    best = (-1.0, 0.5)
    for bw in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0):
        dens = kde_scores(centres, history, bw)
        hit = np.mean(
            [
                _hit_rates(
                    dens, target_counts(valid_from + i * WEEK, valid_from + (i + 1) * WEEK), [0.05], tiebreak
                )[0.05]
                for i in range(4)
            ]
        )
        if hit > best[0]:
            best = (float(hit), bw)
    bandwidth = best[1]

    model = OnlineModel(params=params, target_source=events[0][2], excluded=excluded_set)
    result = BacktestResult(
        cells=len(cells),
        area_km2=len(cells) * float(h3.average_hexagon_area(resolution, "km^2")),
        train_incidents=len(train),
        test_incidents=test_count,
        kde_bandwidth_km=bandwidth,
        params=params,
        excluded=sorted(excluded_set),
    )
    steps = np.linspace(0.0, 0.2, 41)[1:]
    curves: dict[str, list[list[float]]] = {"ours": [], "last 28 days": [], "KDE": []}
    total_hours = (end - first) // HOUR
    done = 0

    def learn_until(stop: int) -> None:
        nonlocal done
        hour = first if model.watermark is None else model.watermark + HOUR
        while hour < stop:
            model.update_hour(hour, by_hour.get(hour, {}))
            hour += HOUR
            done += 1
            if progress is not None and done % 500 == 0:
                progress(done, total_hours)

    learn_until(train_until)
    origin = train_until
    while origin < end:
        forecast = model.forecast(7 * 24, origin)
        ours = np.array([forecast.get(c, 0.0) for c in cells])
        last28 = target_counts(origin - 28 * DAY, origin)
        kde = kde_scores(centres, target_counts(first, origin), bandwidth)
        actual = target_counts(origin, origin + WEEK)
        hits = {
            name: _hit_rates(s, actual, COVERAGES, tiebreak)
            for name, s in (("ours", ours), ("last 28 days", last28), ("KDE", kde))
        }
        for name, s in (("ours", ours), ("last 28 days", last28), ("KDE", kde)):
            curves[name].append(list(_hit_rates(s, actual, steps, tiebreak).values()))
        result.weeks.append(WeekScore(origin, int(actual.sum()), hits))
        result.flagged.append({cells[i] for i in _flagged(ours, 0.05, tiebreak)})
        for day in range(7 if daily_calibration else 0):
            start = origin + day * DAY
            learn_until(start)
            daily = model.forecast(24, start)
            happened = target_counts(start, start + DAY)
            for i, c in enumerate(cells):
                result.calibration.append((1 - math.exp(-daily.get(c, 0.0)), int(happened[i] > 0)))
        learn_until(origin + WEEK)
        origin += WEEK
    if progress is not None:
        progress(total_hours, total_hours)
    result.curves = {name: list(np.mean(np.array(v), axis=0)) if v else [] for name, v in curves.items()}
    return result


#: What ``tune`` tries: how far the level remembers, and how much it borrows from the neighbours.
TUNING_GRID: tuple[dict[str, Any], ...] = tuple(
    {"level_half_life_h": hl * 24 * 7, "smooth": s} for hl in (8, 26) for s in (0.0, 0.1, 0.25)
)


def tune(
    observations: Sequence[Observation],
    *,
    train_until: int,
    resolution: int = 8,
    excluded: Iterable[str] = (),
    validation_weeks: int = 4,
) -> tuple[LearnerParams, list[tuple[dict[str, Any], float]]]:
    """Choose parameters on the training period only: the last ``validation_weeks`` weeks are held out.

    Returns the best parameters and every candidate's mean hit rate at 5 %.
    """
    head = [o for o in observations if o.hour < train_until]
    trials = []
    for candidate in TUNING_GRID:
        params = LearnerParams(**candidate)
        r = run_backtest(
            head,
            train_until=train_until - validation_weeks * WEEK,
            resolution=resolution,
            params=params,
            excluded=excluded,
            daily_calibration=False,
        )
        trials.append((candidate, r.mean_hit("ours", 0.05)))
    best = max(trials, key=lambda t: t[1])[0]
    return LearnerParams(**best), trials


def calibration_table(
    pairs: Sequence[tuple[float, int]], bins: Sequence[float] = (0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0001)
) -> list[dict[str, Any]]:
    """Reliability: per bin of forecast probability, its mean and the observed frequency."""
    p = np.array([a for a, _ in pairs])
    y = np.array([b for _, b in pairs])
    rows = []
    for lo, hi in itertools.pairwise(bins):
        mask = (p >= lo) & (p < hi)
        if mask.any():
            rows.append(
                {
                    "bin": f"{lo:.2f}–{min(hi, 1):.2f}",
                    "n": int(mask.sum()),
                    "forecast": float(p[mask].mean()),
                    "observed": float(y[mask].mean()),
                }
            )
    return rows


def write_report(result: BacktestResult, out: Path, source_name: str) -> Path:
    """Markdown report with PNG plots in ``out``; returns the report's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    methods = ("ours", "last 28 days", "KDE")
    steps = np.linspace(0.0, 0.2, 41)[1:]

    fig, ax = plt.subplots(figsize=(6, 4))
    styles = {"ours": ("C0", "-", 2.2), "last 28 days": ("C1", "--", 1.4), "KDE": ("C2", ":", 1.8)}
    for m in methods:
        colour, dash, width = styles[m]
        ax.plot(steps * 100, np.array(result.curves[m]) * 100, label=m, color=colour, ls=dash, lw=width)
    ax.axvline(1, color="grey", lw=0.5)
    ax.axvline(5, color="grey", lw=0.5)
    ax.set_xlabel("share of the area flagged (%)")
    ax.set_ylabel("share of the week's incidents captured (%)")
    ax.set_title("Capture rate by area flagged (mean over test weeks)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "capture.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [i + 1 for i in range(len(result.weeks))]
    for m in methods:
        ax.plot(xs, [w.hits[m][0.05] / 0.05 for w in result.weeks], marker="o", label=m)
    ax.set_xlabel("test week")
    ax.set_ylabel("PAI at 5 % of the area")
    ax.set_title("PAI at 5 %, week by week")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "pai_weekly.png", dpi=110)
    plt.close(fig)

    table = calibration_table(result.calibration)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.plot([r["forecast"] for r in table], [r["observed"] for r in table], marker="o")
    ax.set_xlabel("forecast probability of ≥1 incident in 24 h")
    ax.set_ylabel("observed frequency")
    ax.set_title("Calibration (reliability)")
    fig.tight_layout()
    fig.savefig(out / "calibration.png", dpi=110)
    plt.close(fig)

    persistence = [len(a & b) / len(b) for a, b in itertools.pairwise(result.flagged)]
    distinct: list[int] = []
    seen: set[str] = set()
    for week in result.flagged:
        seen |= week
        distinct.append(len(seen))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(xs[1:], [p * 100 for p in persistence], marker="o", label="flagged again the next week (%)")
    ax2 = ax.twinx()
    ax2.plot(xs, distinct, color="C1", marker="s", label="distinct cells ever flagged")
    ax.set_xlabel("test week")
    ax.set_ylabel("% of flagged cells flagged again")
    ax2.set_ylabel("distinct cells flagged")
    ax.set_title("Concentration of the flagged area over time")
    fig.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "concentration.png", dpi=110)
    plt.close(fig)

    def pct(x: float) -> str:
        return f"{x * 100:.1f} %"

    lines = [
        f"# Backtest of the short-term risk forecast: {source_name}",
        "",
        f"- Area: {result.cells} H3 cells ({result.area_km2:.0f} km²): cells with an incident in training "
        "and their neighbours.",
        f"- Training incidents: {result.train_incidents}; test incidents: {result.test_incidents} over "
        f"{len(result.weeks)} weeks (rolling origin, weekly, no refit).",
        f"- Excluded from training: {', '.join(result.excluded) or 'none'}.",
        f"- KDE bandwidth chosen on the training period: {result.kde_bandwidth_km} km.",
        f"- Model parameters: {result.params}.",
        "",
        "## Hit rate and PAI",
        "",
        "| method | hit rate @1 % | PAI @1 % | hit rate @5 % | PAI @5 % |",
        "|---|---|---|---|---|",
    ]
    for m in methods:
        lines.append(
            f"| {m} | {pct(result.mean_hit(m, 0.01))} | {result.pai(m, 0.01):.2f} | "
            f"{pct(result.mean_hit(m, 0.05))} | {result.pai(m, 0.05):.2f} |"
        )
    ours5 = result.pai("ours", 0.05)
    for m in methods[1:]:
        other = result.pai(m, 0.05)
        lines.append("")
        mean, lo, hi = result.paired_ci(m)
        lines.append(
            f"At 5 % of the area, ours vs {m}: PAI {ours5:.2f} vs {other:.2f} "
            f"({(ours5 / other - 1) * 100:+.1f} %); "
            f"weekly difference {mean:+.2f}, 95 % bootstrap interval [{lo:+.2f}, {hi:+.2f}]"
            + (": not distinguishable from zero." if lo <= 0 <= hi else ".")
        )
    wins = sum(
        1
        for w in result.weeks
        if w.hits["ours"][0.05] > max(w.hits["KDE"][0.05], w.hits["last 28 days"][0.05])
    )
    lines += [
        f"Ours is strictly best at 5 % in {wins} of {len(result.weeks)} weeks.",
        "",
        "![capture](capture.png)",
        "",
        "![pai](pai_weekly.png)",
        "",
        "## Calibration (24 h, every day of the test period)",
        "",
        f"Brier score: {result.brier():.4f} over {len(result.calibration)} cell-days.",
        "",
        "| forecast bin | cell-days | mean forecast | observed |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['bin']} | {r['n']} | {r['forecast']:.3f} | {r['observed']:.3f} |" for r in table]
    lines += [
        "",
        "![calibration](calibration.png)",
        "",
        "## Feedback and concentration",
        "",
        "A forecast that sends patrols where it flags, trained on records those patrols make, can",
        "lock onto the same places (Ensign et al. 2018). The share of flagged cells flagged again the",
        "next week, and the number of distinct cells flagged so far, show how concentrated it is:",
        "",
        f"- flagged again the next week: mean {np.mean(persistence) * 100 if persistence else 0:.0f} %;",
        f"- distinct cells flagged at 5 %: {distinct[-1] if distinct else 0} over {len(result.weeks)} weeks "
        f"({round(0.05 * result.cells)} per week).",
        "",
        "![concentration](concentration.png)",
        "",
        "Police-initiated records (stops, checks) can be excluded per category from training",
        "(`exclude_from_training` in the mapping), since they measure patrol presence as much as",
        "incidents (Lum & Isaac 2016).",
        "",
    ]
    report = out / "backtest.md"
    report.write_text("\n".join(lines))
    return report
