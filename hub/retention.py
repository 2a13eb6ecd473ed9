"""The retention purge: a background job that applies the configured policy, and its pure cut-off rule."""

from __future__ import annotations

import logging
import time

from hub.jobs import LeasedJob
from hub.storage import Retention, Store

__all__ = ["PurgeJob"]

log = logging.getLogger(__name__)


#: The purge's name in the store's job leases.
JOB = "retention-purge"


class PurgeJob:
    """Runs ``store.compact`` and ``store.purge`` and vacuums the roll-ups every ``every_s`` seconds, in
    a daemon thread, in one process of all those on the store (its lease, :mod:`hub.jobs`): at
    start-up when no purge ran in the last period."""

    def __init__(
        self, store: Store, retention: Retention, every_s: float, *, lease_s: float,
        holder: str | None = None,
    ) -> None:  # fmt: skip
        self.store = store
        self.retention = retention
        self.every_s = every_s
        self.job = LeasedJob(store, JOB, self.run_once, every_s, lease_s=lease_s, holder=holder)

    def start(self) -> None:
        self.job.start()

    def stop(self) -> None:
        self.job.stop()

    def run_once(self) -> dict[str, int]:
        now = time.time()
        # Pack the hours that have closed first: the purge then drops whole segments.
        packed = self.store.compact(now)
        if packed:
            log.info("events compacted", extra={"events": packed})
        removed = self.store.purge(self.retention, now)
        if any(removed.values()):
            log.info("retention purge", extra=removed)
        # Every run, purge or not: ingest updates roll-ups in place all day, and their dead rows
        # must not wait for the server's autovacuum, which may be off (issue 24: 12× bloat).
        self.store.maintain_rollups()
        return removed
