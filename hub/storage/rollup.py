"""Zone × hour roll-ups, computed from events at ingest (pure; no I/O).

Analysts' hourly questions ("people on the quay, per hour, last month") read
these rows instead of scanning raw events. One row per (hour, site, device,
place, metric) with the number of contributing events, the sum and the max:

* ``zone_count``: ``peak:<class>`` (the window's peak count), ``suppressed:<class>``
  (windows where the class was under k), ``windows`` and ``frames``;
* ``line_count``: ``forward:<class>`` and ``backward:<class>`` crossings;
* ``alert``: ``alert:<rule>``;
* ``measurement``: ``<quantity>:<stat>`` (``sound_level:laeq``, ``temperature:mean``…), the
  covariates the fusion layer reads (noise at night as a tranquillity indicator).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vigie import wire

__all__ = ["RollupRow", "rollup_rows"]

HOUR = 3600


@dataclass(frozen=True, slots=True)
class RollupRow:
    hour: int
    site: str
    device: str
    place: str
    metric: str
    n: int
    total: float
    max: float


def _metrics(e: wire.Event) -> tuple[str, int, list[tuple[str, float]]]:
    """(place, time, [(metric, value)]) of one event."""
    if isinstance(e, wire.ZoneCountEvent):
        values: list[tuple[str, float]] = [("windows", 1.0), ("frames", float(e.frames))]
        for label, v in e.counts.items():
            values.append((f"peak:{label}", float(v)) if isinstance(v, int) else (f"suppressed:{label}", 1.0))
        return e.zone, e.window_start, values
    if isinstance(e, wire.LineCountEvent):
        values = [("windows", 1.0)]
        for direction, counts in (("forward", e.forward), ("backward", e.backward)):
            for label, v in counts.items():
                values.append(
                    (f"{direction}:{label}", float(v)) if isinstance(v, int) else (f"suppressed:{label}", 1.0)
                )
        return e.line, e.window_start, values
    if isinstance(e, wire.Measurement):
        # Covariates for the fusion layer: e.g. sound_level:laeq per hour and sensor.
        return e.sensor, e.window_start, [(f"{e.quantity}:{stat}", v) for stat, v in e.stats.items()]
    return e.zone or e.line or "", e.ts, [(f"alert:{e.rule}", 1.0)]


def rollup_rows(events: Iterable[wire.Event]) -> list[RollupRow]:
    """Aggregate a batch of (new) events into roll-up increments, one per key."""
    acc: dict[tuple[int, str, str, str, str], list[float]] = {}
    for e in events:
        place, ts, values = _metrics(e)
        hour = ts - ts % HOUR
        for metric, value in values:
            key = (hour, e.site, e.device, place, metric)
            slot = acc.get(key)
            if slot is None:
                acc[key] = [1, value, value]
            else:
                slot[0] += 1
                slot[1] += value
                slot[2] = max(slot[2], value)
    return [RollupRow(*key, n=int(v[0]), total=v[1], max=v[2]) for key, v in acc.items()]
