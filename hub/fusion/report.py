"""The backtest report: model vs each baseline vs oracle, gap closed, intervals, calibration."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hub.fusion.baselines import BASELINES
from hub.fusion.evaluate import SHARES, Evaluation
from hub.fusion.protocol import bootstrap_ci
from vigie.exceptions import VigieError

__all__ = [
    "MIN_PERIODS_FOR_CI",
    "best_baseline",
    "brier",
    "calibration_table",
    "gap_closed",
    "summary_lines",
    "write_report",
]


def brier(pairs: Sequence[tuple[float, int]]) -> float:
    p = np.array([a for a, _ in pairs])
    y = np.array([b for _, b in pairs])
    return float(np.mean((p - y) ** 2)) if p.size else 0.0


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


def best_baseline(ev: Evaluation, share: float) -> str:
    return max(BASELINES, key=lambda m: ev.mean_pai(m, share))


def gap_closed(ev: Evaluation, share: float) -> float:
    """(model − best baseline) ÷ (oracle − best baseline) on mean PAI (best: on the test)."""
    best = ev.mean_pai(best_baseline(ev, share), share)
    room = ev.mean_pai("oracle", share) - best
    return (ev.mean_pai("model", share) - best) / room if room > 0 else 0.0


#: Fewer scored test periods than this and a bootstrap interval only resamples a handful of
#: values: it comes out narrow and looks significant when it is not.
MIN_PERIODS_FOR_CI = 10


def summary_lines(ev: Evaluation) -> list[str]:
    """One line per share: model, best baseline, oracle, the paired interval and the gap closed."""
    out = []
    for share in SHARES:
        best = best_baseline(ev, share)
        diff = np.array(ev.pai["model"][share]) - np.array(ev.pai[best][share])
        mean, lo, hi = bootstrap_ci(diff.tolist())
        few = (
            f" (only {diff.size} test periods: too few for the interval to mean anything; "
            f"test on {MIN_PERIODS_FOR_CI} or more, e.g. --weeks {MIN_PERIODS_FOR_CI})"
            if diff.size < MIN_PERIODS_FOR_CI
            else ""
        )
        out.append(
            f"PAI @{share * 100:g} %: model {ev.mean_pai('model', share):.2f}, best baseline ({best}) "
            f"{ev.mean_pai(best, share):.2f}, oracle {ev.mean_pai('oracle', share):.2f}; model − best "
            f"{mean:+.2f} [95 % CI {lo:+.2f}, {hi:+.2f}]{few}; "
            f"gap closed {gap_closed(ev, share) * 100:+.0f} %"
        )
    return out


def _reliability_png(ev: Evaluation, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:  # a production hub's install leaves plotting out (requirements/hub-*.txt)
        raise VigieError(
            "the backtest report draws its reliability plot with matplotlib, which this install lacks: "
            "pip install 'vigie[demo]' (or run it from the development environment)"
        ) from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    for name in ("model", "seasonal"):
        table = calibration_table(ev.calibration[name])
        ax.plot([r["forecast"] for r in table], [r["observed"] for r in table], marker="o", label=name)
    ax.set_xlabel(f"forecast probability of ≥1 incident in the {ev.horizon}")
    ax.set_ylabel("observed frequency")
    ax.set_title("Reliability")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _concentration(ev: Evaluation) -> list[str]:
    """Feedback: a forecast that sends patrols where it flags, trained on what they record, can lock onto
    the same places (Ensign et al. 2018); how often the flagged cells stay flagged shows it."""
    again = [len(a & b) / len(b) for a, b in itertools.pairwise(ev.flagged) if b]
    distinct = len(set().union(*ev.flagged)) if ev.flagged else 0
    per = len(ev.flagged[0]) if ev.flagged else 0
    return [
        "## Concentration of the flagged area (feedback)",
        "",
        f"Of the model's cells flagged at 5 % ({per} per {ev.horizon}), a mean "
        f"{np.mean(again) * 100 if again else 0:.0f} % are flagged again the next {ev.horizon}; "
        f"{distinct} distinct cells were flagged over {len(ev.flagged)} {ev.horizon}s. Police-initiated "
        "records can be kept out of training per category (`exclude_from_training`, Lum & Isaac 2016).",
        "",
    ]


def write_report(ev: Evaluation, out: Path, title: str) -> Path:
    """``backtest-<horizon>.md`` and ``reliability-<horizon>.png`` in ``out``; returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    tz = ev.params.timezone
    first, last = (dt.datetime.fromtimestamp(t, dt.UTC) for t in (ev.periods[0][0], ev.periods[-1][1]))
    png = out / f"reliability-{ev.horizon}.png"
    _reliability_png(ev, png)
    b_model, b_seasonal = brier(ev.calibration["model"]), brier(ev.calibration["seasonal"])
    lines = [
        f"# Backtest ({ev.horizon} horizon): {title}",
        "",
        f"- Study area: {len(ev.area.cells)} H3 cells at resolution {ev.area.resolution} "
        f"({ev.area.area_km2:.0f} km²), {ev.area.how}; {ev.outside} incidents outside it.",
        f"- {len(ev.periods)} test periods ({ev.horizon}s in {tz}), {first:%Y-%m-%d %H:%M} to "
        f"{last:%Y-%m-%d %H:%M} UTC; {sum(ev.incidents):.0f} test incidents "
        f"({ev.empty} periods without any, not scored), "
        f"{ev.train_incidents:.0f} before.",
        f"- Tuned on {ev.params.tuned_on[0]} to {ev.params.tuned_on[1]} (local, before the test): "
        f"KDE bandwidth {ev.params.kde_bandwidth_km} km; the guard chose **{ev.params.chosen}**; weights "
        + ", ".join(
            f"{n} {w:.3f}" for n, w in zip(ev.params.features, ev.params.weights, strict=True) if w > 1e-4
        )
        + ".",
        "",
        "| method | PAI @1 % | PEI @1 % | PAI @5 % | PEI @5 % |",
        "|---|---|---|---|---|",
    ]
    for m in [*BASELINES, "model", "oracle"]:
        row = [f"{ev.mean_pai(m, s):.2f} | {np.mean(ev.pei[m][s]):.3f}" for s in SHARES]
        lines.append(f"| {m} | {' | '.join(row)} |")
    lines += ["", *[f"- {line}" for line in summary_lines(ev)], ""]
    lines += [
        "## Calibration",
        "",
        f"Brier score of P(≥1 incident per cell and {ev.horizon}): model {b_model:.4f}, seasonal profile "
        f"{b_seasonal:.4f}; Brier skill score against the seasonal profile "
        f"{1 - b_model / b_seasonal if b_seasonal else 0.0:+.3f}.",
        "",
        "| forecast bin | cell-periods | mean forecast | observed |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['bin']} | {r['n']} | {r['forecast']:.3f} | {r['observed']:.3f} |"
        for r in calibration_table(ev.calibration["model"])
    ]
    lines += ["", f"![reliability]({png.name})", "", *_concentration(ev)]
    report = out / f"backtest-{ev.horizon}.md"
    report.write_text("\n".join(lines))
    return report
