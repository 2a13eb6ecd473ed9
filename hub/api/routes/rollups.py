"""Hourly roll-ups per place: what analysts query instead of raw events."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from hub.api.deps import EPOCH_MAX, SettingsDep, StoreDep
from hub.disclosure.floor import protect_rollup
from hub.storage import RollupQuery

__all__ = ["RollupsPublic", "list_rollups", "router"]

router = APIRouter(prefix="/v1/rollups", tags=["analytics"])


class RollupsPublic(BaseModel):
    data: list[dict[str, Any]] = Field(
        description="Rows of hour, site, device, place, metric, n (events), total, max, mean and suppressed: "
        "for counts of objects, total and mean are null unless every window of the hour is at least k, "
        "max unless it is at least k.",
        examples=[[{"hour": 1700000000, "site": "vieux-port", "device": "cam-01", "place": "quai",
                    "metric": "peak:person", "n": 60, "total": 184.0, "max": 9.0, "mean": 3.067}]],
    )  # fmt: skip
    count: int


@router.get("", response_model=RollupsPublic, summary="Hourly roll-ups per zone or line")
def list_rollups(
    store: StoreDep,
    settings: SettingsDep,
    site: Annotated[str | None, Query(description="Only this site.")] = None,
    device: Annotated[str | None, Query(description="Only this device.")] = None,
    place: Annotated[str | None, Query(description="Only this zone or line.")] = None,
    metric: Annotated[
        str | None,
        Query(
            description="e.g. `peak:person`, `forward:*`, `alert:crowd_density`, `windows`; `*` at the end."
        ),
    ] = None,
    since: Annotated[
        int | None, Query(ge=0, le=EPOCH_MAX, description="Hours starting at or after (UTC epoch s).")
    ] = None,
    until: Annotated[
        int | None, Query(ge=0, le=EPOCH_MAX, description="Hours starting before (UTC epoch s).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> RollupsPublic:
    """Maintained at ingest, one row per hour, place and metric: `mean` = `total` / `n` events."""
    rows = store.list_rollups(
        RollupQuery(
            site=site, device=device, place=place, metric=metric, since=since, until=until, limit=limit
        )
    )
    k = settings.k
    served = [protect_rollup(row, k) for row in rows]
    return RollupsPublic(data=served, count=len(served))
