"""What the browser needs besides data: vendored front-end files, API pages, the map's settings and districts.

* ``/static/vendor/<package>/<file>``: Leaflet, uPlot, Swagger UI, ReDoc from the folder
  ``vigie hub assets fetch`` fills (``hub/vendor_assets.py``), never a CDN; a missing file is a 404
  whose body names the command to run.
* ``/docs`` and ``/redoc``: Swagger UI and ReDoc on those copies, started by script files of the
  dashboard (no inline script), so they render with the network cut.
* ``/v1/map/settings`` and ``/v1/map/districts``: the tile server (if the city has one) and the city's
  named districts as GeoJSON, the map's base layer. Geometry and names only: no count, so nothing
  here goes near the disclosure layer.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from hub.api.deps import SettingsDep
from hub.vendor_assets import FETCH_COMMAND, default_dir, missing

__all__ = [
    "MapSettings",
    "api_pages",
    "districts",
    "map_router",
    "map_settings",
    "redoc",
    "swagger_oauth2_redirect",
    "swagger_ui",
    "vendor_file",
]

api_pages = APIRouter(include_in_schema=False)
map_router = APIRouter(prefix="/v1/map", tags=["map"])

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>{css}</head>
<body>{body}<script src="{lib}"></script><script src="{init}"></script></body></html>"""


def _assets_dir(request: Request) -> Path:
    configured: Path | None = request.app.state.settings.assets_dir
    return configured or default_dir()


@api_pages.get("/static/vendor/{path:path}")
def vendor_file(path: str, request: Request) -> FileResponse:
    """One file of a vendored package; 404 naming ``vigie hub assets fetch`` when it is absent."""
    root = _assets_dir(request).resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root) or target.name.startswith("."):
        raise HTTPException(404, f"no front-end file {path!r}")
    if not target.is_file():
        raise HTTPException(
            404, f"front-end file {path!r} is missing from {root}: run `{FETCH_COMMAND}` on the hub"
        )
    media = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return FileResponse(target, media_type=media, headers={"Cache-Control": "public, max-age=86400"})


def _page(request: Request, title: str, package: str, lib: str, css: str | None, init: str) -> HTMLResponse:
    absent = missing(_assets_dir(request))
    if any(a.startswith(f"{package}/") for a in absent):
        body = (
            f"<h1>{title} is not installed on this hub</h1><p>Its files are fetched at install time, never "
            f"from a CDN. Run <code>{FETCH_COMMAND}</code> on the hub, then reload. The API description is "
            'at <a href="/openapi.json">/openapi.json</a>.</p>'
        )
        return HTMLResponse(_PAGE.format(title=title, css="", body=body, lib="", init="").replace(
            '<script src=""></script>', ""), status_code=503)  # fmt: skip
    link = f'<link rel="stylesheet" href="/static/vendor/{package}/{css}">' if css else ""
    return HTMLResponse(
        _PAGE.format(
            title=title,
            css=link,
            body='<div id="api-page"></div>',
            lib=f"/static/vendor/{package}/{lib}",
            init=f"/dashboard/{init}",
        )
    )


@api_pages.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI on the hub's own copy (``swagger-init.js`` starts it on /openapi.json)."""
    return _page(request, "Vigie hub API: Swagger UI", "swagger-ui-dist", "swagger-ui-bundle.js",
                 "swagger-ui.css", "swagger-init.js")  # fmt: skip


@api_pages.get("/docs/oauth2-redirect")
def swagger_oauth2_redirect(request: Request) -> FileResponse:
    """Swagger UI's OAuth2 redirect page (its script is a file beside it)."""
    return vendor_file("swagger-ui-dist/oauth2-redirect.html", request)


@api_pages.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    """ReDoc on the hub's own copy (``redoc-init.js`` starts it on /openapi.json)."""
    return _page(
        request, "Vigie hub API: ReDoc", "redoc", "bundles/redoc.standalone.js", None, "redoc-init.js"
    )


class MapSettings(BaseModel):
    """What the dashboard's map needs from the hub's settings."""

    tile_url: str | None = Field(
        description="The city's own tile server, `{z}/{x}/{y}` template; null: none."
    )
    tile_attribution: str = Field(description="Credit for those tiles.")
    tz: str = Field(description="The city's time zone (days, weeks and months start there).")
    k: int = Field(description="Counts under k are never shown.")
    districts: bool = Field(description="Whether the hub has named districts (`zones`) to draw and count by.")


@map_router.get("/settings", response_model=MapSettings, summary="The dashboard map's settings")
def map_settings(settings: SettingsDep) -> MapSettings:
    """Tile server, time zone, k, and whether districts are configured."""
    return MapSettings(tile_url=settings.tile_url, tile_attribution=settings.tile_attribution,
                       tz=settings.tz, k=settings.k, districts=settings.zones is not None)  # fmt: skip


@map_router.get("/districts", summary="The city's named districts as GeoJSON (the map's base layer)")
def districts(request: Request) -> JSONResponse:
    """Every district of the hub's ``zones`` file, with and without data: id ``poly:<name>``, its name."""
    features: list[dict[str, Any]] = [
        {
            "type": "Feature",
            "id": f"poly:{p.name}",
            "properties": {"zone": f"poly:{p.name}", "name": p.name},
            "geometry": p.geometry(),
        }
        for p in request.app.state.zone_index.polygons
    ]
    return JSONResponse({"type": "FeatureCollection", "features": features})
