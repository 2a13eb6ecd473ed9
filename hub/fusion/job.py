"""The hub's fusion job: fold new camera roll-ups into the cube and learn the closed hours, periodically."""

from __future__ import annotations

import logging
import threading
import time

from hub.disclosure.calendar import CityCalendar
from hub.fusion.cameras import fold_cameras, load_locations
from hub.fusion.served import served_model
from hub.fusion.service import learn_pending, load_model
from hub.fusion.zones import ZoneIndex
from hub.storage import Store

__all__ = ["FusionJob"]

log = logging.getLogger(__name__)


class FusionJob:
    """Every ``every_s`` seconds, in a daemon thread: cameras into the cube (last two hours), then learn
    (the hub's model, then the one forecasts are served from, under the hub's ``k`` and time zone)."""

    def __init__(self, store: Store, zones: ZoneIndex, every_s: float = 60.0, *, k: int, tz: str) -> None:
        self.store = store
        self.zones = zones
        self.k = k
        self.calendar = CityCalendar(tz)
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fusion", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def run_once(self) -> None:
        if load_locations(self.store):
            fold_cameras(self.store, self.zones, k=self.k, since=int(time.time()) - 2 * 3600)
        learn_pending(self.store, k=self.k, cal=self.calendar)
        # The model forecasts are served from catches up now, not on an analyst's request.
        served_model(self.store, load_model(self.store), self.k, self.calendar)

    def _run(self) -> None:
        delay = min(5.0, self.every_s)  # a first pass soon after start, then every every_s
        while not self._stop.wait(delay):
            delay = self.every_s
            try:
                self.run_once()
            except Exception:  # retried next time; the hub keeps serving
                log.exception("fusion job failed")
