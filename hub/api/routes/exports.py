"""Zones as geometry, and exports for the city's other platforms: CSV, GeoJSON, NGSI-LD (FIWARE)."""

from __future__ import annotations

import csv
import io
import time
from typing import Annotated, Any, Literal

import h3
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from hub.api.deps import EpochQuery, SettingsDep, StoreDep
from hub.disclosure.calendar import Level
from hub.disclosure.floor import protect_rollup
from hub.disclosure.tables import CubeFilter, cube_table
from hub.fusion.cameras import load_locations
from hub.storage import RollupQuery

__all__ = ["cube_csv", "cube_geojson", "ngsi_ld", "router", "zones"]

router = APIRouter(prefix="/v1", tags=["exports"])

SDM_CONTEXT = (
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Transportation/master/context.jsonld"
)
NGSI_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"


def _geometry(zone: str, polygons: dict[str, Any]) -> dict[str, Any] | None:
    kind, _, name = zone.partition(":")
    if kind == "h3" and h3.is_valid_cell(name):
        ring = [[lon, lat] for lat, lon in h3.cell_to_boundary(name)]
        return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}
    if kind == "poly" and name in polygons:
        geometry: dict[str, Any] = polygons[name].geometry()
        return geometry
    return None


@router.get("/zones", summary="Zones with data, as GeoJSON (for maps; no tiles needed)")
def zones(
    request: Request,
    store: StoreDep,
    kind: Annotated[Literal["h3", "poly"], Query(description="H3 cells or named areas.")] = "h3",
    limit: Annotated[int, Query(ge=1, le=20_000)] = 5000,
) -> JSONResponse:
    """Every zone of this kind present in the cube, with its polygon (WGS84)."""
    keys = store.list_zones(f"{kind}:")[:limit]
    polygons = {p.name: p for p in request.app.state.zone_index.polygons}
    features = [
        {"type": "Feature", "id": key, "properties": {"zone": key}, "geometry": geom}
        for key in keys
        if (geom := _geometry(key, polygons)) is not None
    ]
    return JSONResponse({"type": "FeatureCollection", "features": features})


def _cube_rows(
    request: Request,
    k: int,
    store: Any,
    source: str | None,
    since: int | None,
    until: int | None,
    bucket: Level,
) -> tuple[dict[str, Any], ...]:
    flt = CubeFilter(sources=(source,) if source else ())
    return cube_table(store, flt, bucket, since, until, k, request.app.state.calendar).rows


@router.get(
    "/exports/cube.csv",
    summary="The cube as CSV (k-suppressed)",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
def cube_csv(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    source: str | None = None,
    since: EpochQuery = None,
    until: EpochQuery = None,
    bucket: Level = "day",
) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["zone", "start", "end", "bucket", "source", "category", "n", "suppressed"])
    for r in _cube_rows(request, settings.k, store, source, since, until, bucket):
        writer.writerow(
            [
                r["zone"],
                r["start"],
                r["end"],
                r["bucket"],
                r["source"],
                r["category"],
                "" if r["n"] is None else f"{r['n']:g}",
                int(r["suppressed"]),
            ]
        )
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="vigie-cube.csv"'},
    )


@router.get("/exports/cube.geojson", summary="The cube as GeoJSON features (k-suppressed)")
def cube_geojson(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    source: str | None = None,
    since: EpochQuery = None,
    until: EpochQuery = None,
    bucket: Level = "day",
) -> JSONResponse:
    polygons = {p.name: p for p in request.app.state.zone_index.polygons}
    features = []
    for r in _cube_rows(request, settings.k, store, source, since, until, bucket):
        geom = _geometry(r["zone"], polygons)
        if geom is not None:
            features.append({"type": "Feature", "geometry": geom, "properties": r})
    return JSONResponse(
        {"type": "FeatureCollection", "features": features}, media_type="application/geo+json"
    )


def _iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@router.get(
    "/exports/ngsi-ld", summary="FIWARE Smart Data Models in NGSI-LD (CrowdFlowObserved, TrafficFlowObserved)"
)
def ngsi_ld(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    type: Annotated[Literal["CrowdFlowObserved", "TrafficFlowObserved"], Query()] = "CrowdFlowObserved",
    since: EpochQuery = None,
    until: EpochQuery = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> JSONResponse:
    """One entity per camera place and hour, from the roll-ups as analysts get them (disclosure/floor.py)."""
    k = settings.k
    where = load_locations(store)
    metric = "peak:person" if type == "CrowdFlowObserved" else "forward:*"
    rows = store.list_rollups(RollupQuery(metric=metric, since=since, until=until, limit=limit))
    if type == "TrafficFlowObserved":
        rows += store.list_rollups(RollupQuery(metric="backward:*", since=since, until=until, limit=limit))
    entities = []
    for r in (protect_rollup(row, k) for row in rows):
        if r["total"] is None:
            continue
        value = r["total"] / r["n"] if type == "CrowdFlowObserved" and r["n"] else r["total"]
        if value < k:
            continue
        ident = f"urn:ngsi-ld:{type}:vigie:{r['site']}:{r['device']}:{r['place']}:{r['metric']}:{r['hour']}"
        entity: dict[str, Any] = {
            "id": ident,
            "type": type,
            "dateObserved": {"type": "Property", "value": _iso(r["hour"])},
            "dateObservedFrom": {"type": "Property", "value": _iso(r["hour"])},
            "dateObservedTo": {"type": "Property", "value": _iso(r["hour"] + 3600)},
            "dataProvider": {"type": "Property", "value": "vigie"},
            "name": {"type": "Property", "value": f"{r['site']}/{r['device']}/{r['place']}"},
        }
        if type == "CrowdFlowObserved":
            entity["peopleCount"] = {"type": "Property", "value": round(value, 2)}
        else:
            direction, _, vehicle = r["metric"].partition(":")
            entity["intensity"] = {"type": "Property", "value": int(value)}
            entity["vehicleType"] = {"type": "Property", "value": vehicle}
            entity["laneDirection"] = {"type": "Property", "value": direction}
        loc = where.get(f"{r['site']}/{r['device']}")
        if loc is not None:
            entity["location"] = {
                "type": "GeoProperty",
                "value": {"type": "Point", "coordinates": [loc[1], loc[0]]},
            }
        entity["@context"] = [SDM_CONTEXT, NGSI_CONTEXT]
        entities.append(entity)
    return JSONResponse(entities, media_type="application/ld+json")
