"""Wakes this process's live streams when events are stored, by any process or host (issue 22).

On PostgreSQL one thread per API process LISTENs (``hub/storage/live.py``) and bumps a counter on
the event loop; each stream waits for the counter to move, then reads the store. While the listener
is down, and always on SQLite (one box, no channel), streams poll every :data:`POLL_S` as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

__all__ = ["POLL_S", "EventWaker"]

log = logging.getLogger(__name__)

#: How often a stream reads the store when nothing can wake it.
POLL_S = 1.0


class EventWaker:
    """A generation counter that moves when events are stored; streams await it."""

    def __init__(self, dsn: str | None = None, schema: str | None = None) -> None:
        self._target = (dsn, schema) if dsn and schema else None
        self.generation = 0
        #: True while a LISTEN connection is up: streams then need not poll.
        self.listening = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_store(cls, store: Any, live_db: str | None = None) -> EventWaker:
        """Listening on PostgreSQL (a store with ``current_schema``), polling otherwise.

        ``live_db``: where to LISTEN when not the store's own DSN. Behind PgBouncer in transaction
        mode a LISTEN would hold a server connection for one transaction only: without ``live_db``
        (PostgreSQL itself) streams poll.
        """
        if getattr(store, "backend", None) != "postgres" or not hasattr(store, "current_schema"):
            return cls()
        if live_db:
            return cls(live_db, store.current_schema())
        if getattr(store, "pooler", "none") != "none":
            log.warning(
                "db_pooler is %s and live_db is unset: live streams poll every %s s; set VIGIE_HUB_LIVE_DB "
                "to PostgreSQL itself (not PgBouncer) so that they wake at once",
                store.pooler,
                POLL_S,
            )
            return cls()
        return cls(store.dsn, store.current_schema())

    async def start(self) -> None:
        """Call on the event loop the streams run on."""
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        if self._target is None:
            return
        from hub.storage.live import listen_events

        dsn, schema = self._target
        self._thread = threading.Thread(
            target=listen_events,
            args=(dsn, schema, self._stop, self._from_thread, self._state_from_thread),
            name="live-listener",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def wake(self) -> None:
        """On the event loop: move the counter, release every waiting stream."""
        self.generation += 1
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()  # the next waiters wait for the next change

    def _from_thread(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                self._loop.call_soon_threadsafe(self.wake)

    def _state_from_thread(self, up: bool) -> None:
        self.listening = up
        # Either way streams read once: what was stored while nobody listened is not missed.
        self._from_thread()

    async def wait(self, seen: int, timeout: float) -> bool:
        """True as soon as the counter differs from ``seen``; False after ``timeout`` without a change."""
        if self.generation != seen:
            return True
        changed = self._changed
        if changed is None:  # not started: behave as polling
            await asyncio.sleep(timeout)
            return False
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            return self.generation != seen
        return True
