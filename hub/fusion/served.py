"""The model forecasts are served from: the online model learnt on protected hours only (issue 16).

The hub's own model (``fusion.model``) learns every hour's raw counts: its anomalies need
them, and ``hub/disclosure/tables.py`` serves those only on hours the cube serves. A
forecast, though, moves with every count it learnt: its level is a moving average and its
self-exciting term adds the last hour's incidents per cell, so an analyst polling
``/v1/forecast`` every hour could subtract two answers and read a suppressed hour.

So forecasts come from a second model, ``fusion.model.served``, that learns the same
hours from :func:`hub.disclosure.tables.served_hours` only: each hour the cube serves at the
hour level, with its served count; a hidden hour is learnt as an empty one. Everything it
holds is then a function of numbers any analyst can fetch, so no forecast carries more
than the cube does (``docs/privacy.md``). It is kept with the ``k`` and time zone it was
learnt with and catches up from its watermark to the hub model's: in the hub's fusion job
and ``vigie hub learn`` after the hub's model learnt, and, should it lag, when a forecast is
asked; another k or time zone starts it again from the first hour.
"""

from __future__ import annotations

import json
import time

from hub.disclosure.calendar import CityCalendar
from hub.disclosure.tables import CubeFilter, served_hours
from hub.fusion.learning import HOUR, OnlineModel, hourly_counts
from hub.storage import Store

__all__ = ["SERVED_STATE", "served_model"]

SERVED_STATE = "fusion.model.served"


def _load(store: Store, k: int, cal: CityCalendar) -> OnlineModel | None:
    body = store.load_state(SERVED_STATE)
    if body is None:
        return None
    saved = json.loads(body)
    if saved.get("k") != k or saved.get("tz") != cal.tz:
        return None  # learnt under another rule: start again rather than mix two
    return OnlineModel.from_json(saved["model"])


def served_model(store: Store, hub_model: OnlineModel, k: int, cal: CityCalendar) -> OnlineModel:
    """The protected model, learnt up to ``hub_model``'s watermark (saved when it learnt something)."""
    model = _load(store, k, cal)
    if model is None:
        model = OnlineModel(params=hub_model.params, target_source=hub_model.target_source)
    model.excluded = set(hub_model.excluded)
    last = hub_model.watermark
    if last is None or (model.watermark is not None and model.watermark >= last):
        return model
    start = None if model.watermark is None else model.watermark + HOUR
    table = served_hours(store, CubeFilter(zone_prefix="h3:"), start, last + HOUR, k, cal)
    by_hour = hourly_counts(table.rows)
    for hour in sorted(by_hour):
        model.update_hour(hour, by_hour[hour])
    if model.watermark is None:
        return model  # nothing served yet: nothing to forecast from
    if model.watermark < last:
        model.update_hour(last, {})  # hidden hours at the end are empty hours to this model
    body = {"k": k, "tz": cal.tz, "model": model.to_json()}
    store.save_state(SERVED_STATE, json.dumps(body, separators=(",", ":")), time.time())
    return model
