"""When a message may leave the device: not before the end of the time grid step it names.

An alert carries its time rounded down to 10 s (``wire.ALERT_GRANULARITY_S``);
published the moment it fires, its arrival would tell the broker (and the hub)
the firing second anyway. So the link holds every outbox row until the end of
the grid step that the time in its event id falls in: an alert of ``ts``
leaves at ``ts + 10``, whatever second of that step it fired in. Window events
are emitted at their window's end, which is already past that point (windows
are at least 10 s long), so in practice only alerts wait, for 10 s at most.

Pure functions: the link (:mod:`edge.link`) applies them to what it is about
to publish.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TypeVar

from edge.outbox import OutboxItem
from vigie import wire

__all__ = ["MAX_WAIT_S", "due_now", "release_time"]

# The link's pump polls at least this often anyway; a release sooner than that wakes it sooner.
MAX_WAIT_S = 1.0

Item = TypeVar("Item", bound=OutboxItem)


def release_time(msg_id: str | None, now: float, grid_s: int = wire.ALERT_GRANULARITY_S) -> float:
    """The earliest wall time (UTC seconds) at which the message with this event id may leave.

    The end of the grid step holding the id's time part (its window start or coarsened time);
    ``now`` for a row without an event id. A release more than one grid step ahead means the
    clock went back since the row was written: holding it would only stall the outbox, so it
    goes now (its id and payload carry the coarse time whatever happens).
    """
    if msg_id is None:
        return now
    try:
        seconds = (uuid.UUID(msg_id).int >> 80) // 1000
    except ValueError:
        return now
    release = float((seconds // grid_s + 1) * grid_s)
    return now if release - now > grid_s else release


def due_now(
    items: Sequence[Item], now: float, grid_s: int = wire.ALERT_GRANULARITY_S
) -> tuple[list[Item], float]:
    """The items that may leave now, in order, and how long to wait before looking again.

    The wait is the time to the next held item's release, at most :data:`MAX_WAIT_S`.
    """
    ready: list[Item] = []
    wait = MAX_WAIT_S
    for item in items:
        release = release_time(item.msg_id, now, grid_s)
        if release <= now:
            ready.append(item)
        else:
            wait = min(wait, release - now)
    return ready, wait
