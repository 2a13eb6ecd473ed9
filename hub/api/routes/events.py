"""Anonymised zone-count events."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from hub.api.deps import ReadStoreDep, SettingsDep, StoreDep
from hub.api.paging import CURSOR_MAX_LEN, bad_cursor, decode_cursor, encode_cursor, next_link
from hub.api.schemas import EventPublic, EventsPublic
from hub.api.times import SinceQuery, UntilQuery, with_iso
from hub.auth import Principal, recheck
from hub.disclosure.floor import floor_event
from hub.live import POLL_S, EventWaker
from hub.metrics import counted_stream
from hub.storage import EventQuery

__all__ = ["list_events", "router", "stream"]

router = APIRouter(prefix="/v1/events", tags=["events"])
#: How often an open stream re-checks its token (revocation, expiry, disablement, role): issue 17.
RECHECK_S = 2.0
#: Epoch fields served with an ISO 8601 twin (``window_start_iso``...).
_TIMES = ("window_start", "ts", "received_at")


@router.get("", response_model=EventsPublic, summary="List events, newest first")
def list_events(
    store: ReadStoreDep,
    settings: SettingsDep,
    request: Request,
    site: Annotated[str | None, Query(max_length=48, description="Only this site.")] = None,
    device: Annotated[str | None, Query(max_length=48, description="Only this device.")] = None,
    kind: Annotated[
        str | None, Query(max_length=32, description="zone_count, line_count, alert or measurement.")
    ] = None,
    zone: Annotated[str | None, Query(max_length=64, description="Only this zone, line or sensor.")] = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
    cursor: Annotated[
        str | None, Query(max_length=CURSOR_MAX_LEN, description="`next_cursor` of the previous page.")
    ] = None,
) -> EventsPublic:
    """Events from every device, newest first, with cursor pagination; counts under k served as `"<k"`."""
    after: tuple[int, str] | None = None
    if (key := decode_cursor(cursor, (int, str))) is not None and cursor is not None:
        # The key of the last event of a page: its window start and its id, a canonical UUID.
        ws, event_id = key
        try:
            canonical = str(uuid.UUID(event_id)) == event_id
        except ValueError:
            canonical = False
        if not canonical:
            raise bad_cursor(cursor, f"{event_id!r} is not an event id")
        after = (ws, event_id)
    data, next_key = store.list_events(
        EventQuery(
            site=site,
            device=device,
            kind=kind,
            place=zone,
            since=since,
            until=until,
            limit=limit,
            cursor=after,
        )
    )
    more = encode_cursor(next_key) if next_key is not None else None
    return EventsPublic(
        data=[EventPublic(**with_iso(floor_event(row, settings.k), _TIMES, None)) for row in data],
        count=len(data),
        next_cursor=more,
        next=next_link(request, more),
    )


@router.get(
    "/stream",
    summary="Live events (server-sent events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    max_s: Annotated[
        float, Query(gt=0, le=3600, description="Close after this many seconds; reconnect.")
    ] = 300,
) -> StreamingResponse:
    """New events as they are stored, one `data:` line of JSON each; a comment every 15 s keeps it open.

    Counts under k are served as `"<k"`, as in `GET /v1/events`.
    """
    k = settings.k

    principal: Principal = request.state.principal  # set by the router's require("events:read")
    last_check = time.monotonic()

    async def refused() -> str | None:
        """Re-check the token every RECHECK_S: the stream ends soon after it stops being valid."""
        nonlocal last_check
        if time.monotonic() - last_check < RECHECK_S:
            return None
        last_check = time.monotonic()
        return await run_in_threadpool(recheck, store, principal, "events:read")

    waker: EventWaker = request.app.state.waker

    async def feed() -> AsyncIterator[str]:
        seen: set[str] = set()
        first = True
        deadline = time.monotonic() + max_s
        last_beat = time.monotonic()
        generation = waker.generation
        woken = True
        while time.monotonic() < deadline:
            if (why := await refused()) is not None:
                yield f": closed: {why}\n\n"  # an SSE comment: clients see why before the end
                return
            if woken:
                rows, _ = await run_in_threadpool(store.list_events, EventQuery(limit=50))
                for row in reversed(rows):
                    if row["id"] not in seen:
                        seen.add(row["id"])
                        if not first:
                            yield f"data: {json.dumps(floor_event(row, k))}\n\n"
                if len(seen) > 10_000:
                    seen = {r["id"] for r in rows}
            if first:
                yield ": connected\n\n"
                first = False
            if time.monotonic() - last_beat > 15:
                last_beat = time.monotonic()
                yield ": keep-alive\n\n"
            # Woken by a NOTIFY from whichever process stored events (hub/live.py), else every
            # RECHECK_S for the token check only; polling every POLL_S while nothing can wake it.
            listening = waker.listening
            woken = await waker.wait(generation, RECHECK_S if listening else POLL_S) or not listening
            generation = waker.generation

    return StreamingResponse(
        counted_stream(feed()), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )
