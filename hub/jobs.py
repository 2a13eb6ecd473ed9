"""Periodic jobs that one hub process runs at a time, whatever the number of processes (issue 22).

Every hub process may start a :class:`LeasedJob` (each uvicorn worker the retention purge, each
ingest process the fusion job); they share one lease per job in the store
(:mod:`hub.storage.leases`). The holder renews it every third of ``lease_s`` and runs the job each
time its period has passed since it last started, a start the store records in the same statement
that renews the lease; the others try to take it at the same pace. A holder that stops gives the
lease up; one that dies stops renewing, and another takes over once ``lease_s`` has passed and runs
the job when it is next due, not at once.

A run holds the process's store connection, so a holder cannot renew during a run: a run longer
than ``lease_s`` lets another process take the lease (it waits for the next period, which the store
already counts from this run's start), and only a run longer than ``every_s`` can overlap the next
one. Both jobs are safe to repeat (deletes by age; cube hours replaced, not added).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable

from hub.storage import JobClaim, JobLeaseStore

__all__ = ["LeasedJob", "new_holder"]

log = logging.getLogger(__name__)


def new_holder() -> str:
    """This process's name in leases: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class LeasedJob:
    """Runs ``run`` every ``every_s`` seconds in one process among all those sharing the store.

    ``first_delay_s``: how long after start this process first claims the lease (the fusion job
    lets the hub start up first); the job runs then if it is due.
    """

    def __init__(
        self,
        store: JobLeaseStore,
        name: str,
        run: Callable[[], object],
        every_s: float,
        *,
        lease_s: float,
        holder: str | None = None,
        first_delay_s: float = 0.0,
    ) -> None:
        if every_s <= 0 or lease_s <= 0:
            raise ValueError(f"job {name!r} needs every_s > 0 and lease_s > 0 (got {every_s}, {lease_s})")
        self.store, self.name, self._run_job = store, name, run
        self.every_s, self.lease_s, self.first_delay_s = every_s, lease_s, first_delay_s
        self.holder = holder or new_holder()
        self.runs = 0  # runs made by this process
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread; without a first delay, the first claim is made here (one statement), so
        the first run, when due, starts with the thread, as the hub's jobs always did."""
        first: JobClaim | None = None
        if self.first_delay_s <= 0:
            first = self._claim()
        self._thread = threading.Thread(target=self._loop, args=(first,), name=f"job-{self.name}")
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        """Stop after the run in progress, if any, and give the lease up."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=10)
        try:
            self.store.release_job(self.name, self.holder)
        except Exception as exc:  # the store is gone: the lease lapses by itself
            log.warning("could not release the %s lease: %s", self.name, exc)

    def _claim(self) -> JobClaim | None:
        try:
            return self.store.claim_job(self.name, self.holder, time.time(), self.lease_s, self.every_s)
        except Exception as exc:  # the database is away: try again later, a holder or not
            log.warning("could not claim the %s lease: %s", self.name, exc)
            return None

    def _run_if_due(self, claim: JobClaim | None) -> None:
        if claim is not None and claim.due:
            self.runs += 1
            try:
                self._run_job()
            except Exception:  # retried next period; the hub keeps serving
                log.exception("periodic job %s failed", self.name)

    def _wait_after(self, claim: JobClaim | None) -> float:
        renew = self.lease_s / 3
        if claim is None:
            return renew
        if claim.due:
            return 0.0  # renew at once: the run may have outlasted part of the lease
        return max(0.0, min(renew, claim.ran_at + self.every_s - time.time()))

    def _loop(self, first: JobClaim | None) -> None:
        if first is None and self._stop.wait(self.first_delay_s):
            return
        claim = first if first is not None else self._claim()
        while True:
            self._run_if_due(claim)
            if self._stop.wait(self._wait_after(claim)):
                return
            claim = self._claim()
