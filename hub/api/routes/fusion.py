"""The fused city data: the cube (zone × hour × source × category), anomalies, risk forecasts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from hub.api.deps import ReadStoreDep, SettingsDep
from hub.api.paging import CursorQuery, decode_cursor, next_link, page_after, page_offset
from hub.api.times import SinceQuery, UntilQuery, iso, with_iso
from hub.disclosure.calendar import Level
from hub.disclosure.tables import CubeFilter, anomaly_table, cube_table
from hub.fusion.service import forecast as compute_forecast

__all__ = ["AnomaliesPublic", "CubePublic", "ForecastPublic", "anomalies", "cube", "forecast", "router"]

router = APIRouter(prefix="/v1", tags=["fusion"])


class CubePublic(BaseModel):
    data: list[dict[str, Any]] = Field(
        description="Rows of zone (`h3:<cell>` or `poly:<name>`), start and end (UTC epoch s), bucket, "
        "start_iso and end_iso (ISO 8601 in the city's time zone), source, category, n (null when "
        "suppressed) and suppressed; ordered by start, zone, source, category.",
        examples=[
            [
                {
                    "zone": "poly:NOAILLES",
                    "start": 1699999200,
                    "end": 1700002800,
                    "start_iso": "2023-11-14T23:00:00+01:00",
                    "end_iso": "2023-11-15T00:00:00+01:00",
                    "bucket": "hour",
                    "source": "police",
                    "category": "noise",
                    "n": 7.0,
                    "suppressed": False,
                }
            ]
        ],
    )
    count: int = Field(description="Rows in this page.")
    k: int = Field(description="Buckets under k are suppressed, and others with them (complementary).")
    since: int | None = Field(description="Start of the first whole bucket covered (UTC epoch s).")
    until: int | None = Field(description="End of the last whole bucket covered (UTC epoch s).")
    since_iso: str | None = Field(default=None, description="`since` in ISO 8601, in the city's time zone.")
    until_iso: str | None = Field(default=None, description="`until` in ISO 8601, in the city's time zone.")
    tz: str = Field(description="The city's time zone, where days, weeks and months start.")
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last."
    )
    next: str | None = Field(
        default=None, description="This request with the next page's cursor; null on the last."
    )


class AnomaliesPublic(BaseModel):
    data: list[dict[str, Any]] = Field(
        description="Hours where a zone saw far more than its learnt baseline: observed, expected and "
        "the Poisson tail probability p = P(X ≥ observed | expected), hour_iso. Only on hours the cube "
        "serves: an anomaly on a suppressed hour is left out whole.",
    )
    count: int = Field(description="Rows in this page.")
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last."
    )
    next: str | None = Field(
        default=None, description="This request with the next page's cursor; null on the last."
    )


class ForecastPublic(BaseModel):
    horizon_h: int
    data: list[dict[str, Any]] = Field(
        description="Per H3 cell, highest first: expected incidents over the horizon, and the probability "
        "of at least one.",
        examples=[[{"zone": "h3:88446ca803fffff", "expected": 2.4, "probability": 0.909}]],
    )
    count: int = Field(description="Rows in this page.")
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last."
    )
    next: str | None = Field(
        default=None, description="This request with the next page's cursor; null on the last."
    )


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


@router.get(
    "/cube", response_model=CubePublic, summary="The fused cube: counts per zone, time bucket, source"
)
def cube(
    store: ReadStoreDep,
    settings: SettingsDep,
    request: Request,
    zone_kind: Annotated[
        str | None, Query(pattern="^(h3|poly)$", description="`h3` cells or `poly` areas.")
    ] = None,
    zone: Annotated[str | None, Query(description="Comma-separated zone keys, e.g. `poly:NOAILLES`.")] = None,
    source: Annotated[
        str | None, Query(description="Comma-separated sources: police, fire, camera, …")
    ] = None,
    category: Annotated[str | None, Query(description="Comma-separated categories.")] = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    bucket: Annotated[
        Level, Query(description="Calendar buckets in the city's time zone: hour, day, ISO week, month.")
    ] = "hour",
    limit: Annotated[int, Query(ge=1, le=100_000, description="Page size.")] = 10_000,
    cursor: CursorQuery = None,
) -> CubePublic:
    """Counts per zone and fixed time bucket, one source and category per row; buckets under k suppressed.

    Never a sum over a set of zones or a free time range (docs/privacy.md).
    """
    flt = CubeFilter(
        zone_prefix=f"{zone_kind}:" if zone_kind else None,
        zones=_split(zone),
        sources=_split(source),
        categories=_split(category),
    )
    calendar = request.app.state.calendar
    after = decode_cursor(cursor, (int, str, str, str))
    table = cube_table(store, flt, bucket, since, until, settings.k, calendar)
    rows, more = page_after(table.rows, _cube_key, after, limit)
    tz = calendar.zone
    return CubePublic(
        data=[with_iso(r, ("start", "end"), tz) for r in rows], count=len(rows), k=table.k,
        since=table.since, until=table.until, since_iso=iso(table.since, tz), until_iso=iso(table.until, tz),
        tz=calendar.tz, next_cursor=more, next=next_link(request, more),
    )  # fmt: skip


def _cube_key(row: dict[str, Any]) -> tuple[int | str, ...]:
    """The cube's order (``cube_table``), as a cursor: start, zone, source, category."""
    return (row["start"], row["zone"], row["source"], row["category"])


@router.get("/anomalies", response_model=AnomaliesPublic, summary="Zone-hours far above their baseline")
def anomalies(
    store: ReadStoreDep,
    settings: SettingsDep,
    request: Request,
    since: SinceQuery = None,
    until: UntilQuery = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Page size.")] = 1000,
    cursor: CursorQuery = None,
) -> AnomaliesPublic:
    """Raised by the online model when an hour's count is improbable under its hour-of-week baseline."""
    calendar = request.app.state.calendar
    table = anomaly_table(store, since, until, settings.k, calendar)
    rows, more = page_offset(table.rows, cursor, limit)
    return AnomaliesPublic(
        data=[with_iso(r, ("hour",), calendar.zone) for r in rows], count=len(rows), next_cursor=more,
        next=next_link(request, more),
    )  # fmt: skip


@router.get("/forecast", response_model=ForecastPublic, summary="Short-term risk per zone (24 h or 7 days)")
def forecast(
    store: ReadStoreDep,
    settings: SettingsDep,
    request: Request,
    horizon: Annotated[
        int,
        Query(
            description="Hours ahead, 1-168; 24 and 168 serve a tuned blend when one is stored.", ge=1, le=168
        ),
    ] = 24,
    limit: Annotated[int, Query(ge=1, le=100_000, description="Page size.")] = 1000,
    cursor: CursorQuery = None,
) -> ForecastPublic:
    """From the model's last learnt hour, computed on what the cube serves under k (docs/fusion.md)."""
    every = compute_forecast(store, horizon, settings.k, request.app.state.calendar)
    rows, more = page_offset(every, cursor, limit)
    return ForecastPublic(
        horizon_h=horizon, data=rows, count=len(rows), next_cursor=more, next=next_link(request, more)
    )
