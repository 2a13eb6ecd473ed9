"""The backtest under the standard protocol (``protocol.py``): baselines, the tuned blend, the oracle.

``evaluate`` is what ``vigie hub backtest`` runs, so the CLI and the library give the
same numbers. Tuning (KDE bandwidth, blend weights, the guard) sees only the
``validation_weeks`` weeks just before ``until`` (4 weekly or 28 daily periods) and the history
before them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import h3
import numpy as np

from hub.fusion.baselines import BASELINES, Events, centres_km, feature_matrix, neighbour_index
from hub.fusion.blend import CANDIDATES, BlendParams, fit_weights
from hub.fusion.observation import Observation
from hub.fusion.protocol import Horizon, StudyArea, flag, local_midnight, periods, score

__all__ = ["Evaluation", "build_events", "evaluate", "local_hours_of_week", "tune_blend"]

HOUR = 3600
SHARES = (0.01, 0.05)
BANDWIDTHS = (0.25, 0.5, 1.0, 2.0)
MIN_HISTORY_DAYS = 14
GUARD_MARGIN = 0.01


def local_hours_of_week(start: int, stop: int, tz: ZoneInfo) -> np.ndarray:
    """The local hour of week (0 = Monday 00:00 local) of each hour in ``[start, stop)``."""
    out = []
    for t in range(start, stop, HOUR):
        local = dt.datetime.fromtimestamp(t, tz)
        out.append(local.weekday() * 24 + local.hour)
    return np.array(out, dtype=np.int64)


def build_events(
    observations: Iterable[Observation], area: StudyArea, tz: ZoneInfo, excluded: Iterable[str] = ()
) -> tuple[Events, int]:
    """The target incidents inside the study area, and how many fell outside it."""
    index = area.index()
    skip = set(excluded)
    rows: list[tuple[int, int, float]] = []
    outside = 0
    for o in observations:
        if o.lat is None or o.lon is None or f"{o.source}:{o.category}" in skip:
            continue
        i = index.get(str(h3.latlng_to_cell(o.lat, o.lon, area.resolution)), -1)
        if i < 0:
            outside += 1
            continue
        rows.append((o.hour, i, o.count))
    if not rows:
        raise ValueError(
            "no incident left to forecast: every category is excluded or every point is outside the "
            "study area; include a category (exclude_from_training) or use a boundary that holds the data"
        )
    rows.sort()
    t = np.array([r[0] for r in rows], dtype=np.int64)
    hows = np.array(
        [(lt.weekday() * 24 + lt.hour) for lt in (dt.datetime.fromtimestamp(int(x), tz) for x in t)],
        dtype=np.int64,
    )
    cells = list(area.cells)
    events = Events(
        time=t,
        cell=np.array([r[1] for r in rows], dtype=np.int64),
        weight=np.array([r[2] for r in rows], dtype=float),
        how=hows,
        n_cells=len(cells),
        centres_km=centres_km(cells),
        neighbours=neighbour_index(cells),
        cells=tuple(cells),
    )
    return events, outside


def _hit5(scores: np.ndarray, actual: np.ndarray) -> float:
    return score(scores, actual, 0.05).hit_rate + score(scores, actual, 0.01).hit_rate


def tune_blend(
    ev: Events,
    valid: Sequence[tuple[int, int]],
    tz: ZoneInfo,
    horizon: Horizon,
    resolution: int,
) -> BlendParams:
    """KDE bandwidth, blend weights and the guard, on the validation periods only (those with incidents).

    Without any validation incident there is nothing to tune on: the all-history count serves.
    """
    local = [dt.datetime.fromtimestamp(t, tz).date().isoformat() for t in (valid[0][0], valid[-1][1])]
    valid = [(a, b) for a, b in valid if ev.counts(a, b).sum() > 0]
    if not valid:
        only = tuple(1.0 if n == "all" else 0.0 for n in CANDIDATES)
        return BlendParams(horizon, CANDIDATES, only, 0.5, resolution, tz.key, (local[0], local[1]), "all")
    acts = [ev.counts(a, b) for a, b in valid]
    hows = [local_hours_of_week(a, b, tz) for a, b in valid]
    bandwidth = max(
        BANDWIDTHS,
        key=lambda bw: sum(
            _hit5(feature_matrix(ev, ["kde"], a, b, h, bw)[:, 0], y)
            for (a, b), h, y in zip(valid, hows, acts, strict=True)
        ),
    )
    blocks = [
        feature_matrix(ev, CANDIDATES, a, b, h, bandwidth) for (a, b), h in zip(valid, hows, strict=True)
    ]
    weights = fit_weights(blocks, acts)
    # The guard: on validation, a single candidate that ranks better than the blend by more than
    # GUARD_MARGIN (relative) replaces it; within the margin the difference is noise, and the blend,
    # which averages several views of the same hot spots, is the more robust choice.
    names = [*CANDIDATES, "blend"]
    columns = [np.eye(len(CANDIDATES))[j] for j in range(len(CANDIDATES))] + [weights]
    quality = [sum(_hit5(f @ w, y) for f, y in zip(blocks, acts, strict=True)) for w in columns]
    best = int(np.argmax(quality[:-1]))
    pick = len(names) - 1 if quality[-1] * (1 + GUARD_MARGIN) >= quality[best] else best
    chosen = columns[pick]
    if pick != len(names) - 1:  # rescale the lone baseline to the observed totals (calibration)
        chosen = fit_weights([f[:, [best]] for f in blocks], acts)[0] * np.eye(len(CANDIDATES))[best]
    return BlendParams(
        horizon=horizon,
        features=CANDIDATES,
        weights=tuple(float(w) for w in chosen),
        kde_bandwidth_km=bandwidth,
        resolution=resolution,
        timezone=tz.key,
        tuned_on=(local[0], local[1]),
        chosen=names[pick],
    )


@dataclass
class Evaluation:
    """Per test period and method: the scores at each flagged share; calibration pairs; the tuned blend."""

    horizon: Horizon
    area: StudyArea
    params: BlendParams
    periods: list[tuple[int, int]]
    incidents: list[float] = field(default_factory=list)
    hit: dict[str, dict[float, list[float]]] = field(default_factory=dict)  # method → share → per period
    pai: dict[str, dict[float, list[float]]] = field(default_factory=dict)
    pei: dict[str, dict[float, list[float]]] = field(default_factory=dict)
    calibration: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # model, seasonal
    outside: int = 0
    empty: int = 0  # test periods without any incident (not scored)
    flagged: list[set[int]] = field(default_factory=list)  # the model's cells at 5 %, per period
    train_incidents: float = 0.0

    def mean_pai(self, method: str, share: float) -> float:
        return float(np.mean(self.pai[method][share]))


def _check_history(ev: Events, first_valid: int, until: dt.date, tz: ZoneInfo, valid_days: int) -> None:
    history_days = (first_valid - ev.first) / (24 * HOUR)
    if history_days < MIN_HISTORY_DAYS:
        earliest = dt.datetime.fromtimestamp(ev.first, tz).date()
        earliest += dt.timedelta(days=MIN_HISTORY_DAYS + valid_days)
        earliest += dt.timedelta(days=-earliest.weekday() % 7)  # the next Monday: weeks start on one
        raise ValueError(
            f"--until {until}: only {max(history_days, 0):.0f} days of history before the {valid_days}-day "
            f"validation period (at least {MIN_HISTORY_DAYS} needed); choose --until {earliest} or later"
        )


def evaluate(
    ev: Events,
    area: StudyArea,
    *,
    until: dt.date,
    count: int,
    horizon: Horizon,
    tz: ZoneInfo,
    validation_weeks: int = 4,
) -> Evaluation:
    """Tune on the ``validation_weeks`` weeks before ``until``, then score ``count`` test periods from it.

    Raises:
        ValueError: too little history, or test periods past the end of the data (naming the fix).
    """
    step = 7 if horizon == "week" else 1
    test = periods(until, count, horizon, tz)
    valid = periods(until - dt.timedelta(weeks=validation_weeks), 7 * validation_weeks // step, horizon, tz)
    _check_history(ev, valid[0][0], until, tz, 7 * validation_weeks)
    # The data cover the whole day of their last incident (a week is not dropped for want of an
    # incident in its final hour).
    end = dt.datetime.fromtimestamp(int(ev.time[-1]), tz).date()
    covered = local_midnight(end + dt.timedelta(days=1), tz)
    if test[-1][1] > covered:
        fits = sum(1 for _, b in test if b <= covered) * step // 7
        weeks = count * step // 7
        raise ValueError(f"the data end on {end}: --weeks {weeks} goes past it; use --weeks {fits} or less")
    params = tune_blend(ev, valid, tz, horizon, area.resolution)
    result = Evaluation(
        horizon, area, params, test, train_incidents=float(ev.counts(ev.first, test[0][0]).sum())
    )
    methods = [*BASELINES, "model", "oracle"]
    for m in methods:
        result.hit[m], result.pai[m], result.pei[m] = (
            {s: [] for s in SHARES},
            {s: [] for s in SHARES},
            {s: [] for s in SHARES},
        )
    result.calibration = {"model": [], "seasonal": []}
    for a, b in test:
        actual = ev.counts(a, b)
        if actual.sum() <= 0:  # PAI and PEI are undefined without incidents: counted, not scored
            result.empty += 1
            continue
        hows = local_hours_of_week(a, b, tz)
        base = feature_matrix(ev, BASELINES, a, b, hows, params.kde_bandwidth_km)
        model = params.predict(feature_matrix(ev, params.features, a, b, hows, params.kde_bandwidth_km))
        scores = {m: base[:, j] for j, m in enumerate(BASELINES)} | {"model": model, "oracle": actual}
        result.incidents.append(float(actual.sum()))
        result.flagged.append({int(i) for i in flag(model, 0.05)})
        for m, s in scores.items():
            for share in SHARES:
                sc = score(s, actual, share)
                result.hit[m][share].append(sc.hit_rate)
                result.pai[m][share].append(sc.pai)
                result.pei[m][share].append(sc.pei)
        happened = (actual > 0).astype(int)
        for name, lam in (("model", model), ("seasonal", scores["seasonal"])):
            result.calibration[name] += list(zip((1 - np.exp(-lam)).tolist(), happened.tolist(), strict=True))
    return result
