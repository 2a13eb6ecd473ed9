"""Refitting a persisted blend as data arrive: the same tuning as the backtest, on the latest whole periods.

Once a blend is stored for a horizon (``vigie hub backtest --save``), the hub keeps it
current: when the cube holds a whole period (a local day, or a calendar week) past the
blend's validation window, the KDE bandwidth, the weights and the guard are tuned again
(``evaluate.tune_blend``) on the ``validation_weeks`` weeks that end at the last whole
period, with the history before them. Pure: cube rows in, parameters out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import Any
from zoneinfo import ZoneInfo

from hub.fusion.blend import BlendParams
from hub.fusion.evaluate import MIN_HISTORY_DAYS, tune_blend
from hub.fusion.protocol import local_midnight, periods
from hub.fusion.serving import cube_events

__all__ = ["refit_blend", "validation_end"]

DAY = 24 * 3600


def validation_end(horizon: str, data_end: int, tz: ZoneInfo) -> dt.date:
    """The local day where the last whole period before ``data_end`` (epoch s, exclusive) ends: the local
    midnight at or before it, or for weeks the Monday midnight at or before it."""
    day = dt.datetime.fromtimestamp(data_end, tz).date()
    if local_midnight(day, tz) > data_end:  # a DST edge: that midnight is still ahead
        day -= dt.timedelta(days=1)
    return day - dt.timedelta(days=day.weekday()) if horizon == "week" else day


def refit_blend(
    params: BlendParams,
    rows: Iterable[dict[str, Any]],
    excluded: set[str],
    data_end: int,
    *,
    now: float,
    validation_weeks: int = 4,
) -> BlendParams | None:
    """``params`` tuned again on the latest whole periods of the cube rows before ``data_end``.

    ``None`` when there is nothing new to fit on (no whole period past ``params.tuned_on``), or too
    little history before the validation window (the stored blend then keeps serving).
    """
    tz = ZoneInfo(params.timezone)
    end = validation_end(params.horizon, data_end, tz)
    if end.isoformat() <= params.tuned_on[1]:
        return None
    step = 7 if params.horizon == "week" else 1
    valid = periods(end - dt.timedelta(weeks=validation_weeks), 7 * validation_weeks // step,
                    "week" if params.horizon == "week" else "day", tz)  # fmt: skip
    events = cube_events(rows, excluded, tz, valid[-1][1])
    if events is None or valid[0][0] - events.first < MIN_HISTORY_DAYS * DAY:
        return None
    tuned = tune_blend(events, valid, tz, "week" if params.horizon == "week" else "day", params.resolution)
    fitted = dt.datetime.fromtimestamp(now, dt.UTC).replace(microsecond=0).isoformat()
    return dataclasses.replace(tuned, fitted_at=fitted)
