"""Hourly roll-ups per place: what analysts query instead of raw events."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from hub.api.deps import ReadStoreDep, SettingsDep
from hub.api.paging import CursorQuery, decode_cursor, encode_cursor, next_link
from hub.api.times import SinceQuery, UntilQuery, with_iso
from hub.disclosure.floor import protect_rollup
from hub.storage import RollupQuery

__all__ = ["RollupsPublic", "list_rollups", "router"]

router = APIRouter(prefix="/v1/rollups", tags=["analytics"])


class RollupsPublic(BaseModel):
    data: list[dict[str, Any]] = Field(
        description="Rows of hour, site, device, place, metric, n (events), total, max, mean and suppressed: "
        "for counts of objects, total and mean are null unless every window of the hour is at least k, "
        "max unless it is at least k; hour_iso is the hour in ISO 8601 (UTC). Ordered by hour, site, "
        "device, place, metric.",
        examples=[[{"hour": 1700000000, "site": "vieux-port", "device": "cam-01", "place": "quai",
                    "metric": "peak:person", "n": 60, "total": 184.0, "max": 9.0, "mean": 3.067}]],
    )  # fmt: skip
    count: int = Field(description="Rows in this page.")
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last."
    )
    next: str | None = Field(
        default=None, description="This request with the next page's cursor; null on the last."
    )


@router.get("", response_model=RollupsPublic, summary="Hourly roll-ups per zone or line")
def list_rollups(
    store: ReadStoreDep,
    settings: SettingsDep,
    request: Request,
    site: Annotated[str | None, Query(description="Only this site.")] = None,
    device: Annotated[str | None, Query(description="Only this device.")] = None,
    place: Annotated[str | None, Query(description="Only this zone or line.")] = None,
    metric: Annotated[
        str | None,
        Query(
            description="e.g. `peak:person`, `forward:*`, `alert:crowd_density`, `windows`; `*` at the end."
        ),
    ] = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Page size.")] = 1000,
    cursor: CursorQuery = None,
) -> RollupsPublic:
    """Maintained at ingest, one row per hour, place and metric: `mean` = `total` / `n` events."""
    after = decode_cursor(cursor, (int, str, str, str, str))
    page = store.list_rollups(
        RollupQuery(
            site=site, device=device, place=place, metric=metric, since=since, until=until,
            limit=limit, after=after,  # decode_cursor checked the shape
        )
    )  # fmt: skip
    more = None if page.next is None else encode_cursor(page.next)
    k = settings.k
    served = [with_iso(protect_rollup(row, k), ("hour",), None) for row in page.rows]
    return RollupsPublic(data=served, count=len(served), next_cursor=more, next=next_link(request, more))
