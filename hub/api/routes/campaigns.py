"""OTA campaigns' progress, for operators and the dashboard (campaigns are driven by `vigie ota campaign`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from hub.api.paging import CursorQuery, next_link, page_offset
from vigie.exceptions import VigieError

__all__ = ["get_campaign", "list_campaigns", "router"]

router = APIRouter(prefix="/v1/campaigns", tags=["fleet"])


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
    """Per campaign: state, current wave, devices installed and failed, the last events."""
    from hub.campaigns import progress

    store = _store(request)
    docs, more = page_offset(store.list(), cursor, limit)
    rows = [progress(doc) for doc in docs]
    return {"data": rows, "count": len(rows), "next_cursor": more, "next": next_link(request, more)}


@router.get(
    "/{campaign_id}", summary="One campaign's progress", responses={404: {"description": "No such campaign"}}
)
def get_campaign(request: Request, campaign_id: str) -> dict[str, Any]:
    from hub.campaigns import progress

    store = _store(request)
    try:
        return progress(store.get(campaign_id))
    except VigieError as exc:
        raise HTTPException(404, str(exc)) from None
