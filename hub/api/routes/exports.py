"""Zones as geometry, and exports for the city's other platforms: CSV, GeoJSON, Parquet, NGSI-LD (FIWARE)."""

from __future__ import annotations

import csv
import io
import time
from dataclasses import replace
from typing import Annotated, Any, Literal

import h3
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from hub.api.deps import ReadStoreDep, SettingsDep
from hub.api.paging import CursorQuery, decode_cursor, encode_cursor, next_link, page_offset
from hub.api.times import SinceQuery, UntilQuery, iso
from hub.disclosure.calendar import Level
from hub.disclosure.floor import protect_rollup
from hub.disclosure.tables import CubeFilter, cube_table
from hub.fusion.cameras import load_locations
from hub.storage import RollupQuery

__all__ = ["cube_csv", "cube_geojson", "cube_parquet", "ngsi_ld", "router", "zones"]

router = APIRouter(prefix="/v1", tags=["exports"])

SDM_CONTEXT = (
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Transportation/master/context.jsonld"
)
NGSI_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
#: How deep NGSI-LD pages may go, in roll-up rows.
NGSI_MAX = 10_000_000


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
    store: ReadStoreDep,
    kind: Annotated[Literal["h3", "poly"], Query(description="H3 cells or named areas.")] = "h3",
    limit: Annotated[int, Query(ge=1, le=20_000, description="Page size.")] = 5000,
    cursor: CursorQuery = None,
) -> JSONResponse:
    """Every zone of this kind present in the cube, with its polygon (WGS84); `next` for the next page."""
    keys, more = page_offset(store.list_zones(f"{kind}:"), cursor, limit)
    polygons = {p.name: p for p in request.app.state.zone_index.polygons}
    features = [
        {"type": "Feature", "id": key, "properties": {"zone": key}, "geometry": geom}
        for key in keys
        if (geom := _geometry(key, polygons)) is not None
    ]
    return JSONResponse(
        {"type": "FeatureCollection", "features": features, "next_cursor": more,
         "next": next_link(request, more)}
    )  # fmt: skip


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
    store: ReadStoreDep,
    settings: SettingsDep,
    source: str | None = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    bucket: Level = "day",
) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    # start_iso/end_iso last: a spreadsheet shows a date, and readers of the first eight columns keep working.
    writer.writerow(
        ["zone", "start", "end", "bucket", "source", "category", "n", "suppressed", "start_iso", "end_iso"]
    )
    zone = request.app.state.calendar.zone
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
                iso(r["start"], zone),
                iso(r["end"], zone),
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
    store: ReadStoreDep,
    settings: SettingsDep,
    source: str | None = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
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


@router.get(
    "/exports/cube.parquet",
    summary="The cube as Parquet (k-suppressed; for pandas, DuckDB, Spark)",
    response_class=Response,
    responses={200: {"content": {"application/vnd.apache.parquet": {}}}},
)
def cube_parquet(
    request: Request,
    store: ReadStoreDep,
    settings: SettingsDep,
    source: str | None = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    bucket: Level = "day",
) -> Response:
    """The rows of ``cube.csv``, typed: start and end as timestamps in the city's time zone, n nullable."""
    import pyarrow as pa  # the hub extra; imported here so that a hub starts without paying for it
    import pyarrow.parquet as pq

    rows = _cube_rows(request, settings.k, store, source, since, until, bucket)
    tz = request.app.state.calendar.tz
    columns = {
        name: [r[name] for r in rows] for name in ("zone", "start", "end", "bucket", "source", "category")
    }
    table = pa.table(
        {
            "zone": pa.array(columns["zone"], pa.string()),
            "start": pa.array(columns["start"], pa.timestamp("s", tz=tz)),
            "end": pa.array(columns["end"], pa.timestamp("s", tz=tz)),
            "bucket": pa.array(columns["bucket"], pa.string()),
            "source": pa.array(columns["source"], pa.string()),
            "category": pa.array(columns["category"], pa.string()),
            "n": pa.array([r["n"] for r in rows], pa.float64()),
            "suppressed": pa.array([bool(r["suppressed"]) for r in rows], pa.bool_()),
        }
    ).replace_schema_metadata({"vigie.k": str(settings.k), "vigie.tz": tz, "vigie.bucket": bucket})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return Response(
        sink.getvalue().to_pybytes(),
        media_type="application/vnd.apache.parquet",
        headers={"Content-Disposition": 'attachment; filename="vigie-cube.parquet"'},
    )


def _iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@router.get(
    "/exports/ngsi-ld", summary="FIWARE Smart Data Models in NGSI-LD (CrowdFlowObserved, TrafficFlowObserved)"
)
def ngsi_ld(
    request: Request,
    store: ReadStoreDep,
    settings: SettingsDep,
    type: Annotated[Literal["CrowdFlowObserved", "TrafficFlowObserved"], Query()] = "CrowdFlowObserved",
    since: SinceQuery = None,
    until: UntilQuery = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Roll-up rows per page.")] = 1000,
    cursor: CursorQuery = None,
) -> JSONResponse:
    """One entity per camera place and hour, from the roll-ups as analysts get them (disclosure/floor.py).

    Paged like NGSI-LD brokers do: a ``Link: <…>; rel="next"`` header while more remain.
    """
    k = settings.k
    where = load_locations(store)
    decoded = decode_cursor(cursor, (int,))
    offset = min(int(decoded[0]) if decoded else 0, NGSI_MAX)
    # Each query's first offset+limit+1 rows hold the merged list's first offset+limit+1.
    q = RollupQuery(since=since, until=until, limit=offset + limit + 1)
    metrics = ("peak:person",) if type == "CrowdFlowObserved" else ("forward:*", "backward:*")
    merged = sorted(
        (r for m in metrics for r in store.list_rollups(replace(q, metric=m)).rows),
        key=lambda r: (r["hour"], r["site"], r["device"], r["place"], r["metric"]),
    )
    rows = merged[offset : offset + limit]
    more = encode_cursor((offset + limit,)) if len(merged) > offset + limit else None
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
    link = next_link(request, more)
    headers = {"Link": f'<{link}>; rel="next"'} if link else None
    return JSONResponse(entities, media_type="application/ld+json", headers=headers)
