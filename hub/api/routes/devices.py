"""Fleet state as seen from the hub."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from hub.api.deps import ReadStoreDep
from hub.api.paging import CursorQuery, decode_cursor, encode_cursor, next_link, page_offset
from hub.api.schemas import DevicePublic, DevicesPublic, QuarantinePublic

__all__ = ["list_devices", "list_quarantine", "router"]

router = APIRouter(tags=["fleet"])
#: How deep into the quarantine pages may go (newest first).
QUARANTINE_MAX = 1_000_000


@router.get("/v1/devices", response_model=DevicesPublic, summary="List devices seen by the hub")
def list_devices(
    store: ReadStoreDep,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Page size.")] = 1000,
    cursor: CursorQuery = None,
) -> DevicesPublic:
    """Every device that has sent anything, with its status, last heartbeat and counters (by site, device)."""
    rows, more = page_offset(store.list_devices(), cursor, limit)
    return DevicesPublic(
        data=[DevicePublic(**r) for r in rows],
        count=len(rows),
        next_cursor=more,
        next=next_link(request, more),
    )


@router.get("/v1/quarantine", response_model=QuarantinePublic, summary="Messages that failed validation")
def list_quarantine(
    store: ReadStoreDep,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
    cursor: CursorQuery = None,
) -> QuarantinePublic:
    """The newest quarantined messages: topic, field, reason and the first bytes of the payload."""
    decoded = decode_cursor(cursor, (int,))
    offset = int(decoded[0]) if decoded else 0
    # Newest first; the store keeps a bounded quarantine, so reading up to the page's end is cheap.
    rows = store.list_quarantine(min(offset + limit + 1, QUARANTINE_MAX))[offset:]
    more = encode_cursor((offset + limit,)) if len(rows) > limit else None
    rows = rows[:limit]
    return QuarantinePublic(
        data=rows, count=len(rows), total=store.quarantine_count(), next_cursor=more,
        next=next_link(request, more),
    )  # fmt: skip
