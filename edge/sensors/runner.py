"""Polls the sensors on their schedules, tracks their health, and turns readings into window statistics."""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from edge.sensors import PLAUSIBLE, Reading, Sensor, SensorError
from edge.sensors.sound import window_stats
from vigie import wire

__all__ = ["MeasurementAggregator", "SensorRunner", "SensorState"]

SensorState = Literal["ok", "silent", "out_of_range"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Acc:
    values: list[float] = field(default_factory=list)
    impulses: int = 0


class MeasurementAggregator:
    """Pure: readings in, one Measurement per sensor, quantity and window out."""

    def __init__(
        self,
        *,
        site: str,
        device: str,
        window_s: int,
        impulse_db: float = 10.0,
        id_factory: Callable[[int], str] = wire.new_event_id,
    ) -> None:
        self.site, self.device, self.window_s, self.impulse_db = site, device, window_s, impulse_db
        self._id = id_factory
        self._windows: dict[int, dict[tuple[str, str], _Acc]] = defaultdict(dict)
        # Running background for impulsive noise: the last 30 s of sound blocks, per sensor.
        self._background: dict[str, list[float]] = defaultdict(list)
        self._loud: dict[str, bool] = defaultdict(bool)

    def add(self, readings: Sequence[Reading]) -> None:
        for r in readings:
            acc = self._windows[wire.coarsen(r.ts, self.window_s)].setdefault((r.sensor, r.quantity), _Acc())
            acc.values.append(r.value)
            if r.quantity == "sound_level":
                history = self._background[r.sensor]
                if len(history) >= 40:
                    background = float(np.percentile(history, 10))
                    loud = r.value >= background + self.impulse_db
                    if loud and not self._loud[r.sensor]:
                        acc.impulses += 1
                    self._loud[r.sensor] = loud
                history.append(r.value)
                del history[:-240]

    def close_before(self, ts: float) -> list[wire.Measurement]:
        """Events of every window that ended at or before ``ts`` (all of them with ``math.inf``)."""
        out: list[wire.Measurement] = []
        for start in sorted(self._windows):
            if start + self.window_s > ts:
                break
            for (sensor, quantity), acc in sorted(self._windows.pop(start).items()):
                out.append(self._event(start, sensor, quantity, acc))
        return out

    def _event(self, start: int, sensor: str, quantity: str, acc: _Acc) -> wire.Measurement:
        v = acc.values
        if quantity == "sound_level":
            stats = window_stats(v, acc.impulses)
        elif quantity == "presence":
            onsets = sum(1 for a, b in itertools.pairwise(v) if a <= 0.5 < b)
            stats = {"occupancy": round(sum(1 for x in v if x > 0.5) / len(v), 3), "onsets": float(onsets)}
        else:
            stats = {"mean": round(sum(v) / len(v), 2), "min": round(min(v), 2), "max": round(max(v), 2)}
        return wire.Measurement(
            site=self.site,
            device=self.device,
            id=self._id(start),
            sensor=sensor,
            quantity=quantity,  # type: ignore[arg-type]
            unit=wire.UNITS[quantity],
            window_start=start,
            window_s=self.window_s,
            samples=len(v),
            stats=stats,
        )


class SensorRunner:
    """A thread that polls each sensor at its period and hands closed windows to ``publish``."""

    def __init__(
        self,
        sensors: Sequence[Sensor],
        aggregator: MeasurementAggregator,
        publish: Callable[[list[wire.Measurement]], None],
        *,
        silent_after: int = 3,
    ) -> None:
        self.sensors = list(sensors)
        self.aggregator = aggregator
        self.publish = publish
        self.silent_after = silent_after
        self._failures: dict[str, int] = defaultdict(int)
        self._next_due: dict[str, float] = {}
        self._state: dict[str, SensorState] = {s.sensor_id: "ok" for s in self.sensors}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sensors", daemon=True)

    def health(self) -> dict[str, SensorState]:
        """Each sensor's state for the heartbeat: ok, silent or out_of_range."""
        with self._lock:
            return dict(self._state)

    def start(self) -> None:
        if self.sensors:
            self._thread.start()

    def stop(self) -> None:
        """Stop polling and publish every open window."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.publish(self.aggregator.close_before(math.inf))
        for s in self.sensors:
            s.close()

    def poll_once(self, now: float, *, due_only: bool = False) -> None:
        """Read every sensor (or, from the thread, those whose period has come), aggregate, publish."""
        for sensor in self.sensors:
            if due_only and now < self._next_due.get(sensor.sensor_id, 0.0):
                continue
            self._next_due[sensor.sensor_id] = now + sensor.period_s
            try:
                readings = sensor.read(now)
            except SensorError as exc:
                self._failures[sensor.sensor_id] += 1
                if self._failures[sensor.sensor_id] == self.silent_after:
                    log.warning("sensor silent", extra={"sensor": sensor.sensor_id, "error": str(exc)})
                if self._failures[sensor.sensor_id] >= self.silent_after:
                    self._set(sensor.sensor_id, "silent")
                continue
            self._failures[sensor.sensor_id] = 0
            good = [r for r in readings if _plausible(r)]
            self._set(sensor.sensor_id, "ok" if len(good) == len(readings) else "out_of_range")
            self.aggregator.add(good)
        closed = self.aggregator.close_before(now)
        if closed:
            self.publish(closed)

    def _set(self, sensor_id: str, state: SensorState) -> None:
        with self._lock:
            self._state[sensor_id] = state

    def _run(self) -> None:
        period = min(s.period_s for s in self.sensors)
        while not self._stop.wait(period):
            try:
                self.poll_once(time.time(), due_only=True)
            except Exception:  # a plugin bug must not take the camera down with it
                log.exception("sensor polling failed")


def _plausible(r: Reading) -> bool:
    low, high = PLAUSIBLE.get(r.quantity, (-math.inf, math.inf))
    return low <= r.value <= high and math.isfinite(r.value)
