"""Fleet state as seen from the hub."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from hub.api.deps import StoreDep
from hub.api.schemas import DevicePublic, DevicesPublic, QuarantinePublic

__all__ = ["list_devices", "list_quarantine", "router"]

router = APIRouter(tags=["fleet"])


@router.get("/v1/devices", response_model=DevicesPublic, summary="List devices seen by the hub")
def list_devices(store: StoreDep) -> DevicesPublic:
    """Every device that has sent anything, with its status, last heartbeat and counters."""
    rows = store.list_devices()
    return DevicesPublic(data=[DevicePublic(**r) for r in rows], count=len(rows))


@router.get("/v1/quarantine", response_model=QuarantinePublic, summary="Messages that failed validation")
def list_quarantine(store: StoreDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> QuarantinePublic:
    """The newest quarantined messages: topic, field, reason and the first bytes of the payload."""
    rows = store.list_quarantine(limit)
    return QuarantinePublic(data=rows, count=len(rows), total=store.quarantine_count())
