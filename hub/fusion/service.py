"""The hub side of learning: feed closed hours of the cube to the online model, keep its state in the store.

The state lives in the store (``model_state``), so a restarted hub continues
where it stopped; hours already learnt are never learnt twice (the model's
watermark), and hours arriving later than the watermark are stored in the cube
but not learnt (an online model does not go back in time).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import h3

from hub.disclosure.calendar import CityCalendar
from hub.disclosure.tables import CubeFilter, served_hours
from hub.fusion.blend import BlendParams
from hub.fusion.learning import HOUR, LearnerParams, OnlineModel, hourly_counts
from hub.fusion.refit import refit_blend, validation_end
from hub.fusion.served import served_model
from hub.fusion.serving import blend_forecast
from hub.storage import CubeQuery, Store, walk_cube

__all__ = [
    "LearnOutcome",
    "forecast",
    "learn_pending",
    "load_blend",
    "load_model",
    "refit_blends",
    "save_blend",
    "set_exclusions",
]

log = logging.getLogger(__name__)
STATE = "fusion.model"


@dataclass(frozen=True)
class LearnOutcome:
    hours: int
    anomalies: int
    watermark: int | None


def load_model(
    store: Store, params: LearnerParams | None = None, target_source: str = "police"
) -> OnlineModel:
    """The model from the store, or a new one."""
    body = store.load_state(STATE)
    if body is None:
        return OnlineModel(params=params or LearnerParams(), target_source=target_source)
    return OnlineModel.from_json(body)


def set_exclusions(store: Store, source: str, categories: list[str]) -> None:
    """Categories kept out of training (the mapping's ``exclude_from_training``), saved with the model."""
    model = load_model(store)
    model.excluded |= {f"{source}:{c}" for c in categories}
    store.save_state(STATE, model.to_json(), time.time())


def learn_pending(
    store: Store,
    *,
    now: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    k: int | None = None,
    cal: CityCalendar | None = None,
) -> LearnOutcome:
    """Learn every closed hour after the watermark (a closed hour ended at least an hour ago).

    With the hub's ``k`` and calendar, stored blends are then refitted on what the cube serves
    (``refit_blends``); without them (a library caller that only learns), no blend changes.
    """
    model = load_model(store)
    now = time.time() if now is None else now
    closed = int(now // HOUR) * HOUR - HOUR
    start = model.watermark + HOUR if model.watermark is not None else None
    rows = list(walk_cube(store, CubeQuery(zone_prefix="h3:", start=start, end=closed)))
    by_hour = hourly_counts(rows)
    hours = sorted(by_hour)
    anomalies = 0
    for i, hour in enumerate(hours):
        found = model.update_hour(hour, by_hour[hour])
        if found:
            anomalies += store.add_anomalies(found, time.time())
        if progress is not None and (i % 200 == 0 or i == len(hours) - 1):
            progress(i + 1, len(hours))
    if hours:
        store.save_state(STATE, model.to_json(), time.time())
    log.info("learnt", extra={"hours": len(hours), "anomalies": anomalies, "watermark": model.watermark})
    if k is not None and cal is not None:
        refit_blends(store, model, k=k, cal=cal, now=now)
    return LearnOutcome(len(hours), anomalies, model.watermark)


def refit_blends(
    store: Store, model: OnlineModel, *, k: int, cal: CityCalendar, now: float
) -> list[BlendParams]:
    """Tune each stored blend again when whole periods past its validation window have been learnt
    (``refit.py``); the refitted parameters replace the stored ones. Returns those refitted.

    The tuning reads the hours the cube serves under ``k`` (``served_hours``), as the blend's
    forecasts do: no parameter is fitted on a suppressed count.
    """
    if model.watermark is None:
        return []
    data_end = model.watermark + HOUR
    rows: list[dict[str, Any]] | None = None
    done = []
    for horizon in ("week", "day"):
        params = load_blend(store, horizon)
        if (
            params is None
            or validation_end(horizon, data_end, ZoneInfo(params.timezone)).isoformat()
            <= (params.tuned_on[1])
        ):
            continue  # none stored, or no whole period past its validation window yet
        if rows is None:
            target = CubeFilter(zone_prefix="h3:", sources=(model.target_source,))
            rows = list(served_hours(store, target, None, data_end, k, cal).rows)
        if not rows or h3.get_resolution(rows[0]["zone"][3:]) != params.resolution:
            continue  # tuned on other cells: forecast() says so and serves the online model
        try:
            refitted = refit_blend(params, rows, model.excluded, data_end, now=now)
        except ValueError as exc:  # data the tuning cannot use: the stored blend keeps serving, said once
            log.warning("blend not refitted", extra={"horizon": horizon, "reason": str(exc)})
            continue
        if refitted is not None:
            save_blend(store, refitted)
            done.append(refitted)
            log.info("blend refitted", extra={"horizon": horizon, "tuned_on": list(refitted.tuned_on)})
    return done


def save_blend(store: Store, params: BlendParams) -> None:
    """Keep the tuned blend (``vigie hub backtest --save``): the hub serves it for its horizon from now on."""
    store.save_state(f"{STATE}.blend.{params.horizon}", params.to_json(), time.time())


def load_blend(store: Store, horizon: str) -> BlendParams | None:
    body = store.load_state(f"{STATE}.blend.{horizon}")
    return BlendParams.from_json(body) if body else None


def forecast(store: Store, horizon_h: int, k: int, cal: CityCalendar) -> list[dict[str, Any]]:
    """Per H3 cell: expected target incidents over the next ``horizon_h`` hours, P(at least one), and the
    hours covered (``start``, ``end``: UTC ISO 8601).

    With a tuned blend persisted for this horizon (24 h: ``day``, 168 h: ``week``), the blend serves;
    otherwise the online model does. Either reads only the hours the cube serves under ``k``
    (``hub/fusion/served.py``): no forecast carries a suppressed count.
    """
    model = load_model(store)
    if model.watermark is None:
        return []
    start = model.watermark + HOUR
    blend = load_blend(store, {24: "day", 168: "week"}.get(horizon_h, ""))
    rows: list[dict[str, Any]] = []
    if blend is not None:
        only_target = CubeFilter(zone_prefix="h3:", sources=(model.target_source,))
        rows = list(served_hours(store, only_target, None, start, k, cal).rows)
        if rows and h3.get_resolution(rows[0]["zone"][3:]) != blend.resolution:
            # Tuned on other cells: its weights do not apply; say so and serve the online model.
            log.warning(
                "tuned blend ignored",
                extra={
                    "blend_resolution": blend.resolution,
                    "cube_resolution": h3.get_resolution(rows[0]["zone"][3:]),
                },
            )
            blend = None
    if blend is not None:
        expected = blend_forecast(blend, rows, model.excluded, start, start + horizon_h * HOUR)
        label = f"blend ({blend.chosen}, tuned on {blend.tuned_on[0]} to {blend.tuned_on[1]}" + (
            f", refitted {blend.fitted_at})" if blend.fitted_at else ")"
        )
    else:
        expected = served_model(store, model, k, cal).forecast(horizon_h, start)
        label = "online model"
    covers = {k: dt.datetime.fromtimestamp(t, dt.UTC).isoformat() for k, t in
              (("start", start), ("end", start + horizon_h * HOUR))}  # fmt: skip
    return sorted(
        (
            {
                "zone": f"h3:{cell}",
                "expected": value,
                "probability": 1 - math.exp(-value),
                **covers,
                "model": label,
            }
            for cell, value in expected.items()
        ),
        key=lambda r: (-r["expected"], r["zone"]),
    )
