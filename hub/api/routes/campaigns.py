"""OTA campaigns: read by operators and technicians, created and steered by operators.

The hub's campaign service (``hub/campaign_service.py``) drives them; these routes only write the
campaign's row. Writes need ``fleet:write`` (operators, admins); the audit middleware records
each call (who, path, status, the purpose if one is given) and the campaign's own log names the
user.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from hub.api.paging import CursorQuery, next_link, page_offset
from hub.auth import Principal, require
from hub.campaign_select import Selector, select_devices
from ota.rollout import DEFAULT_WAVES, GatePolicy
from vigie.exceptions import VigieError

__all__ = ["Action", "CampaignCreate", "act", "create_campaign", "get_campaign", "list_campaigns", "router"]

router = APIRouter(prefix="/v1/campaigns", tags=["fleet"])
Writer = Annotated[Principal, require("fleet:write")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such campaign"}}


class CampaignCreate(BaseModel):
    """A campaign: which published target, to which devices, in which waves, behind which gate."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{
                "target": "models/ssd-coco-1.1.0.tar", "version": "1.1.0",
                "selector": {"sites": ["vieux-port"], "profiles": ["rpi5"]},
                "policy": {"max_failure_rate": 0.02, "max_latency_ms": 80, "soak_s": 600},
            }]
        },
    )  # fmt: skip
    target: str = Field(max_length=200, pattern=r"^[A-Za-z0-9._/-]+$", description="Published TUF target.")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$", description="Its version.")
    selector: Selector = Field(default_factory=Selector, description="Which enrolled devices.")
    waves: list[float] = Field(
        default=list(DEFAULT_WAVES), min_length=1, max_length=20, description="Cumulative fractions."
    )
    policy: GatePolicy = Field(default_factory=GatePolicy, description="The health gate between waves.")
    name: str | None = Field(
        default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,47}$", description="Campaign id (default generated)."
    )


def _store(request: Request) -> Any:
    """The campaigns in the hub's own store (shared by every hub host on one database)."""
    from hub.campaigns import CampaignStore

    return CampaignStore(request.app.state.store)


@router.get("", summary="OTA campaigns and their progress")
def list_campaigns(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Page size.")] = 1000,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    """Per campaign: state, current wave, devices installed and failed, the last events, its runner."""
    from hub.campaigns import progress

    store = _store(request)
    docs, more = page_offset(store.list(), cursor, limit)
    rows = [progress(doc) for doc in docs]
    return {"data": rows, "count": len(rows), "next_cursor": more, "next": next_link(request, more)}


@router.get("/{campaign_id}", summary="One campaign's progress", responses=_NOT_FOUND)
def get_campaign(request: Request, campaign_id: str) -> dict[str, Any]:
    from hub.campaigns import progress

    try:
        return progress(_store(request).get(campaign_id))
    except VigieError as exc:
        raise HTTPException(404, str(exc)) from None


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a campaign (the hub runs it)",
    responses={400: {"description": "The body is not JSON"},
               409: {"description": "A campaign has this name"},
               422: {"description": "No device matches, or invalid waves or policy"}},
)  # fmt: skip
def create_campaign(request: Request, body: CampaignCreate, who: Writer) -> dict[str, Any]:
    """Select the devices, plan the waves; the campaign service of one hub process starts wave 1."""
    from hub.campaigns import progress

    store = request.app.state.store
    devices = select_devices(
        store.list_enrolments(), store.list_devices(), body.selector, store.list_device_tags()
    )
    if not devices:
        wanted = body.selector.model_dump(exclude_none=True)
        raise HTTPException(
            422,
            f"no enrolled, unrevoked device matches the selector {wanted}: check its sites, profiles, models "
            "and tags against GET /v1/devices and GET /v1/device-tags",
        )
    try:
        doc = _store(request).create(
            body.target, body.version, devices, fractions=body.waves, policy=body.policy, name=body.name
        )
    except ValueError as exc:
        raise HTTPException(422, f"waves: {exc}") from None
    except VigieError as exc:
        raise HTTPException(409, str(exc)) from None
    entry = {"at": doc["created_at"], "event": "created", "why": f"by {who.username}"}
    _store(request).modify(doc["id"], lambda d: {"log": [*d["log"], entry]})
    return progress(_store(request).get(doc["id"]))


Action = Literal["pause", "resume", "abort", "promote"]
_STATES = {"pause": "paused", "resume": "running", "abort": "aborted"}


@router.post(
    "/{campaign_id}/{action}",
    summary="Pause, resume, abort or promote (force the current wave through its gate)",
    responses={**_NOT_FOUND, 409: {"description": "Not possible in the campaign's state"}},
)
def act(request: Request, campaign_id: str, action: Action, who: Writer) -> dict[str, Any]:
    """``pause``: no new wave starts; ``resume``; ``abort``: for good; ``promote``: the next wave
    starts without waiting for the current one's gate (the operator takes the responsibility)."""
    from hub.campaigns import progress

    store = _store(request)
    try:
        store.get(campaign_id)
    except VigieError as exc:
        raise HTTPException(404, str(exc)) from None
    reason = f"{who.username}: {action}"
    try:
        if action == "promote":
            doc = store.promote(campaign_id, reason)
        else:
            doc = store.set_state(campaign_id, _STATES[action], reason)
    except VigieError as exc:
        raise HTTPException(409, str(exc)) from None
    return progress(doc)
