"""OTA campaigns' progress, for operators and the dashboard (campaigns are driven by `vigie ota campaign`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request

from hub.api.deps import SettingsDep
from vigie.exceptions import VigieError

router = APIRouter(prefix="/v1/campaigns", tags=["fleet"])


def _store(request: Request, settings: SettingsDep) -> Any:
    """The campaign store, opened once per app (it appears when the first campaign is created)."""
    store = getattr(request.app.state, "campaigns", None)
    if store is not None:
        return store
    state = settings.hub_state()
    if state is None or not (state.folder / "campaigns.db").exists():
        return None
    from hub.campaigns import CampaignStore

    request.app.state.campaigns = CampaignStore(state.folder / "campaigns.db")
    return request.app.state.campaigns


@router.get("", summary="OTA campaigns and their progress")
def list_campaigns(request: Request, settings: SettingsDep) -> dict[str, Any]:
    """Per campaign: state, current wave, devices installed and failed, the last events."""
    from hub.campaigns import progress

    store = _store(request, settings)
    rows = [progress(doc) for doc in store.list()] if store is not None else []
    return {"data": rows, "count": len(rows)}


@router.get(
    "/{campaign_id}", summary="One campaign's progress", responses={404: {"description": "No such campaign"}}
)
def get_campaign(request: Request, settings: SettingsDep, campaign_id: str) -> dict[str, Any]:
    from hub.campaigns import progress

    store = _store(request, settings)
    try:
        if store is None:
            raise VigieError(f"no campaign {campaign_id!r}")
        return progress(store.get(campaign_id))
    except VigieError as exc:
        raise HTTPException(404, str(exc)) from None
