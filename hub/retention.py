"""The retention purge: a background job that applies the configured policy, and its pure cut-off rule."""

from __future__ import annotations

import logging
import threading
import time

from hub.storage import Retention, Store

__all__ = ["PurgeJob"]

log = logging.getLogger(__name__)


class PurgeJob:
    """Runs ``store.compact`` and ``store.purge``, and vacuums the roll-ups, at start-up and then every
    ``every_s`` seconds, in a daemon thread."""

    def __init__(self, store: Store, retention: Retention, every_s: float) -> None:
        self.store = store
        self.retention = retention
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention-purge", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

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

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a failed purge must not stop the hub; it is retried next time
                log.exception("retention purge failed")
            self._stop.wait(self.every_s)
