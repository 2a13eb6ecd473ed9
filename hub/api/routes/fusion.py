"""The fused city data: the cube (zone × hour × source × category), anomalies, risk forecasts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from hub.api.deps import EPOCH_MAX, SettingsDep, StoreDep
from hub.disclosure.calendar import Level
from hub.disclosure.tables import CubeFilter, anomaly_table, cube_table
from hub.fusion.service import forecast as compute_forecast

__all__ = ["AnomaliesPublic", "CubePublic", "ForecastPublic", "anomalies", "cube", "forecast", "router"]

router = APIRouter(prefix="/v1", tags=["fusion"])


class CubePublic(BaseModel):
    data: list[dict[str, Any]] = Field(
        description="Rows of zone (`h3:<cell>` or `poly:<name>`), start and end (UTC epoch s), bucket, "
        "source, category, n (null when suppressed) and suppressed.",
        examples=[
            [
                {
                    "zone": "poly:NOAILLES",
                    "start": 1699999200,
                    "end": 1700002800,
                    "bucket": "hour",
                    "source": "police",
                    "category": "noise",
                    "n": 7.0,
                    "suppressed": False,
                }
            ]
        ],
    )
    count: int
    k: int = Field(description="Buckets under k are suppressed, and others with them (complementary).")
    since: int | None = Field(description="Start of the first whole bucket covered (UTC epoch s).")
    until: int | None = Field(description="End of the last whole bucket covered (UTC epoch s).")
    tz: str = Field(description="The city's time zone, where days, weeks and months start.")


class AnomaliesPublic(BaseModel):
    data: list[dict[str, Any]] = Field(
        description="Hours where a zone saw far more than its learnt baseline: observed, expected and "
        "the Poisson tail probability p = P(X ≥ observed | expected). Only on hours the cube serves: "
        "an anomaly on a suppressed hour is left out whole.",
    )
    count: int


class ForecastPublic(BaseModel):
    horizon_h: int
    data: list[dict[str, Any]] = Field(
        description="Per H3 cell, highest first: expected incidents over the horizon, and the probability "
        "of at least one.",
        examples=[[{"zone": "h3:88446ca803fffff", "expected": 2.4, "probability": 0.909}]],
    )
    count: int


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


@router.get(
    "/cube", response_model=CubePublic, summary="The fused cube: counts per zone, time bucket, source"
)
def cube(
    store: StoreDep,
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
    since: Annotated[
        int | None, Query(ge=0, le=EPOCH_MAX, description="From (UTC epoch s), rounded down to a bucket.")
    ] = None,
    until: Annotated[
        int | None, Query(ge=0, le=EPOCH_MAX, description="To (UTC epoch s), rounded up to a bucket.")
    ] = None,
    bucket: Annotated[
        Level, Query(description="Calendar buckets in the city's time zone: hour, day, ISO week, month.")
    ] = "hour",
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
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
    table = cube_table(store, flt, bucket, since, until, settings.k, calendar, limit)
    return CubePublic(
        data=list(table.rows), count=len(table.rows), k=table.k, since=table.since, until=table.until,
        tz=calendar.tz,
    )  # fmt: skip


@router.get("/anomalies", response_model=AnomaliesPublic, summary="Zone-hours far above their baseline")
def anomalies(
    store: StoreDep,
    settings: SettingsDep,
    request: Request,
    since: Annotated[
        int | None, Query(ge=0, le=EPOCH_MAX, description="Hours at or after (UTC epoch s).")
    ] = None,
    until: Annotated[int | None, Query(ge=0, le=EPOCH_MAX, description="Hours before (UTC epoch s).")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> AnomaliesPublic:
    """Raised by the online model when an hour's count is improbable under its hour-of-week baseline."""
    table = anomaly_table(store, since, until, limit, settings.k, request.app.state.calendar)
    return AnomaliesPublic(data=list(table.rows), count=len(table.rows))


@router.get("/forecast", response_model=ForecastPublic, summary="Short-term risk per zone (24 h or 7 days)")
def forecast(
    store: StoreDep,
    settings: SettingsDep,
    request: Request,
    horizon: Annotated[int, Query(description="Hours ahead: 24 or 168.", ge=1, le=168)] = 24,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
) -> ForecastPublic:
    """From the model's last learnt hour: baseline × covariates + self-exciting term (docs/fusion.md)."""
    rows = compute_forecast(store, horizon, settings.k, request.app.state.calendar)[:limit]
    return ForecastPublic(horizon_h=horizon, data=rows, count=len(rows))
