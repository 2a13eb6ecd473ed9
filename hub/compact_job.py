"""The compaction job: packs recent events into segments every few minutes (issue 24).

Live events arrive one per stream per batch, so ingest writes them as hot rows (one row each, with
their indexes: ~400 B an event on PostgreSQL against ~30 B packed). This job keeps the hot share to
``grace_s`` plus ``every_s`` of the city by packing, every ``every_s``, what started ``grace_s`` ago
or earlier (``store.compact_recent``). One hub process runs it at a time (its lease, :mod:`hub.jobs`).
"""

from __future__ import annotations

import logging
import time

from hub.jobs import LeasedJob
from hub.storage import Store

__all__ = ["JOB", "CompactJob"]

log = logging.getLogger(__name__)

#: The job's name in the store's job leases.
JOB = "event-compaction"


class CompactJob:
    """Runs ``store.compact_recent(now, grace_s)`` every ``every_s`` seconds in a daemon thread."""

    def __init__(
        self, store: Store, every_s: float, grace_s: float, *, lease_s: float, holder: str | None = None
    ) -> None:
        if grace_s < 0:
            raise ValueError(f"compact_grace_s must be 0 or more (got {grace_s})")
        self.store = store
        self.grace_s = grace_s
        self.job = LeasedJob(store, JOB, self.run_once, every_s, lease_s=lease_s, holder=holder)

    def start(self) -> None:
        self.job.start()

    def stop(self) -> None:
        self.job.stop()

    def run_once(self, now: float | None = None) -> int:
        """Pack what started ``grace_s`` before ``now`` (the clock by default); returns the events packed."""
        packed = self.store.compact_recent(time.time() if now is None else now, self.grace_s)
        if packed:
            log.info("events compacted", extra={"events": packed})
        return packed
