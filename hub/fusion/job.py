"""The hub's fusion job: fold new camera roll-ups into the cube and learn the closed hours, periodically."""

from __future__ import annotations

import time

from hub.config import HubSettings
from hub.disclosure.calendar import CityCalendar
from hub.fusion.cameras import fold_cameras, load_locations
from hub.fusion.served import served_model
from hub.fusion.service import learn_pending, load_model
from hub.fusion.zones import ZoneIndex, load_geojson
from hub.jobs import LeasedJob
from hub.storage import Store

__all__ = ["JOB", "FusionJob", "settings_zones"]

#: The fusion job's name in the store's job leases.
JOB = "fusion"


def settings_zones(settings: HubSettings) -> ZoneIndex:
    """The cube's zones under the hub's settings: H3 cells, and the named areas of ``zones`` if set."""
    polygons = load_geojson(settings.zones, settings.zones_name) if settings.zones else []
    return ZoneIndex(settings.h3_resolution, polygons)


class FusionJob:
    """Every ``every_s`` seconds, in a daemon thread: cameras into the cube (last two hours), then learn
    (the hub's model, then the one forecasts are served from, under the hub's ``k`` and time zone).

    One process of all those on the store runs it (its lease, :mod:`hub.jobs`); the first pass comes
    soon after start (at most 5 s), when the last one, by any process, is a period old."""

    def __init__(
        self, store: Store, zones: ZoneIndex, every_s: float = 60.0, *, k: int, tz: str, lease_s: float,
        holder: str | None = None,
    ) -> None:  # fmt: skip
        self.store = store
        self.zones = zones
        self.k = k
        self.calendar = CityCalendar(tz)
        self.every_s = every_s
        self.job = LeasedJob(store, JOB, self.run_once, every_s, lease_s=lease_s, holder=holder,
                             first_delay_s=min(5.0, every_s))  # fmt: skip

    @classmethod
    def for_settings(cls, store: Store, settings: HubSettings) -> FusionJob:
        """The job as the hub's settings say (zones, period, ``k``, time zone, lease)."""
        return cls(store, settings_zones(settings), settings.fusion_every_s, k=settings.k, tz=settings.tz,
                   lease_s=settings.job_lease_s)  # fmt: skip

    def start(self) -> None:
        self.job.start()

    def stop(self) -> None:
        self.job.stop()

    def run_once(self) -> None:
        if load_locations(self.store):
            fold_cameras(self.store, self.zones, k=self.k, since=int(time.time()) - 2 * 3600)
        learn_pending(self.store, k=self.k, cal=self.calendar)
        # The model forecasts are served from catches up now, not on an analyst's request.
        served_model(self.store, load_model(self.store), self.k, self.calendar)
