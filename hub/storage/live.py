"""New events announced on PostgreSQL's ``LISTEN/NOTIFY`` (issue 22): live streams wake, never poll.

The writer (any ingest worker, on any host) sends one ``NOTIFY`` after each commit that stored
events; the payload is only the schema (several hubs may share one database), never an event. Each
API process holds one connection that ``LISTEN``s (:func:`listen_events`, run by ``hub/live.py``)
and wakes its streams, which then read the store as before. SQLite has no such channel: one box,
its streams keep polling.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from hub.storage.events import EventSql
from vigie import wire

__all__ = ["APP_NAME", "CHANNEL", "EventNotifySql", "listen_events"]

#: The channel every hub on the database uses; the payload names the schema.
CHANNEL = "vigie_events"
#: The listener's ``application_name`` (``pg_stat_activity`` shows one per API process).
APP_NAME = "vigie-live"
log = logging.getLogger(__name__)


class EventNotifySql(EventSql):
    """PostgreSQL's event writes, plus the ``NOTIFY`` after each commit that stored something."""

    def add_events(self, events: Sequence[wire.Event], received_at: float) -> int:
        inserted = super().add_events(events, received_at)
        if inserted:
            try:
                with self._statements() as cur:  # autocommit: sent at once, after the batch's own commit
                    cur.execute("SELECT pg_notify(%s, current_schema())", (CHANNEL,))
            except Exception:  # the events are stored: a missed wake-up only delays streams
                log.warning("could not notify the live streams", exc_info=True)
        return inserted

    def current_schema(self) -> str:
        """The schema this store writes to (the payload its notifications carry)."""
        return str(self._query("SELECT current_schema()")[0][0])


def listen_events(
    dsn: str,
    schema: str,
    stop: threading.Event,
    on_event: Callable[[], None],
    on_state: Callable[[bool], None],
    *,
    retry_s: float = 2.0,
) -> None:
    """Until ``stop``: LISTEN on its own connection, call ``on_event`` per notification for ``schema``.

    ``on_state(True)`` once listening, ``on_state(False)`` when the connection is lost (the caller then
    polls); reconnects every ``retry_s``. Blocking: run it in a thread.
    """
    import psycopg

    while not stop.is_set():
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=10, application_name=APP_NAME) as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                on_state(True)
                while not stop.is_set():
                    # A timeout so that stop is seen within a second on a quiet hub.
                    for note in conn.notifies(timeout=1.0):
                        if note.payload == schema:
                            on_event()
        except Exception as exc:  # the database went away: poll meanwhile, then listen again
            log.warning("live stream listener lost PostgreSQL; streams poll", extra={"error": str(exc)})
        on_state(False)
        stop.wait(retry_s)
