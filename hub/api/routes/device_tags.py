"""Operators' tags on devices (``pilot``, ``north-district``), for campaign selectors."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from hub.api.deps import StoreDep
from hub.auth import Principal, require

__all__ = ["TagsIn", "list_tags", "router", "set_tags"]

router = APIRouter(tags=["fleet"])
_SLUG = r"^[a-z0-9][a-z0-9-]{0,47}$"


class TagsIn(BaseModel):
    """The device's tags, replacing the ones it had (an empty list removes them)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"tags": ["pilot", "north"]}]})
    tags: list[Annotated[str, Field(pattern=_SLUG)]] = Field(max_length=32)


@router.get("/v1/device-tags", summary="Every tagged device and its tags")
def list_tags(store: StoreDep) -> dict[str, Any]:
    tags = store.list_device_tags()
    return {"data": tags, "count": len(tags)}


@router.put(
    "/v1/devices/{site}/{device}/tags",
    summary="Set a device's tags (operators)",
    responses={
        400: {"description": "The body is not JSON"},
        404: {"description": "No enrolled device of that name"},
    },
)
def set_tags(
    store: StoreDep, site: str, device: str, body: TagsIn, who: Annotated[Principal, require("fleet:write")]
) -> dict[str, Any]:
    enrolled = {(e["site"], e["device"]) for e in store.list_enrolments() if e["revoked_at"] is None}
    if (site, device) not in enrolled:
        raise HTTPException(404, f"{site}/{device}: no enrolled device of that name (GET /v1/devices)")
    store.set_device_tags(site, device, body.tags)
    return {"site": site, "device": device, "tags": sorted(set(body.tags))}
