"""Zones: every observation maps to an H3 cell and, when it falls in one, a named polygon.

H3 cells (Uber's hexagonal grid, the ``h3`` package) give equal-area units for
learning and for "share of the area flagged"; named polygons (quartiers,
arrondissements, from GeoJSON) give the units people talk about. Both keys are
kept for each observation: ``h3:<cell>`` and ``poly:<name>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h3

__all__ = ["Polygon", "ZoneIndex", "h3_key", "load_boundary", "load_geojson", "point_in_ring"]

Ring = Sequence[tuple[float, float]]  # (lon, lat) pairs, as GeoJSON writes them


def h3_key(cell: str) -> str:
    return f"h3:{cell}"


def point_in_ring(lon: float, lat: float, ring: Ring) -> bool:
    """Even-odd rule (ray casting) on a closed or open ring of (lon, lat)."""
    inside = False
    n = len(ring)
    j = n - 1
    for i in range(n):
        xi, yi = ring[i]
        xj, yj = ring[j]
        if (yi > lat) != (yj > lat) and lon < (xj - xi) * (lat - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


@dataclass(frozen=True)
class Polygon:
    """A named (multi)polygon: outer rings with their holes, and a bounding box to test first."""

    name: str
    parts: tuple[tuple[Ring, tuple[Ring, ...]], ...]
    bbox: tuple[float, float, float, float] = field(default=(0.0, 0.0, 0.0, 0.0))

    def contains(self, lat: float, lon: float) -> bool:
        x0, y0, x1, y1 = self.bbox
        if not (x0 <= lon <= x1 and y0 <= lat <= y1):
            return False
        for outer, holes in self.parts:
            if point_in_ring(lon, lat, outer) and not any(point_in_ring(lon, lat, h) for h in holes):
                return True
        return False

    def geometry(self) -> dict[str, object]:
        """GeoJSON geometry (for the dashboard)."""
        return {
            "type": "MultiPolygon",
            "coordinates": [
                [list(map(list, outer)), *[list(map(list, h)) for h in holes]] for outer, holes in self.parts
            ],
        }


def _polygon(name: str, geometry: dict[str, object]) -> Polygon:
    kind = geometry.get("type")
    coords = geometry.get("coordinates")
    polys = [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else None
    if not isinstance(polys, list):
        raise ValueError(f"zone {name!r}: geometry type {kind!r} is not Polygon or MultiPolygon")
    parts = []
    xs: list[float] = []
    ys: list[float] = []
    for poly in polys:
        rings = [tuple((float(p[0]), float(p[1])) for p in ring) for ring in poly]
        parts.append((rings[0], tuple(rings[1:])))
        xs += [p[0] for p in rings[0]]
        ys += [p[1] for p in rings[0]]
    return Polygon(name, tuple(parts), (min(xs), min(ys), max(xs), max(ys)))


def load_geojson(path: Path, name_property: str) -> list[Polygon]:
    """Named polygons from a GeoJSON FeatureCollection (WGS84 lon/lat).

    Raises:
        ValueError: a missing or unreadable file, not a FeatureCollection, a feature without
            ``name_property`` or with another geometry type; the message names the file and the fix.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ValueError(
            f"zones {path}: no such file (working folder {Path.cwd()}): check its path"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(
            f"zones {path}: not a readable GeoJSON file ({exc}); export it again as GeoJSON"
        ) from None
    features = data.get("features") if isinstance(data, dict) else None
    if not isinstance(features, list) or not features:
        raise ValueError(
            f"zones {path}: not a GeoJSON FeatureCollection with features; pass the areas' GeoJSON"
        )
    out = []
    for i, feature in enumerate(features):
        props = (feature.get("properties") if isinstance(feature, dict) else None) or {}
        if name_property not in props:
            raise ValueError(
                f"zones {path}: feature {i} has no property {name_property!r}; it has {sorted(props)}: "
                "pass --zone-name with the property holding each area's name"
            )
        name = str(props[name_property])
        try:
            out.append(_polygon(name, feature["geometry"]))
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise ValueError(
                f"zones {path}: feature {i} ({name!r}) has no usable polygon geometry ({exc})"
            ) from None
    return out


def load_boundary(path: Path) -> list[Polygon]:
    """Every feature of a GeoJSON, unnamed: a city's boundary (one feature, or its districts together).

    Raises:
        ValueError: an unreadable file or a geometry that is not a polygon.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"boundary {path}: not a readable GeoJSON ({exc})") from None
    return [_polygon(f"{path.name} #{i}", f["geometry"]) for i, f in enumerate(data.get("features", []))]


class ZoneIndex:
    """Maps points to H3 cells at one resolution and to named polygons."""

    def __init__(self, resolution: int = 8, polygons: Iterable[Polygon] = ()) -> None:
        if not 0 <= resolution <= 15:
            raise ValueError(f"H3 resolution {resolution}: choose 0-15 (8 is about 0.74 km² per cell)")
        self.resolution = resolution
        self.polygons = list(polygons)
        self._cache: dict[str, str | None] = {}

    def cell(self, lat: float, lon: float) -> str:
        return str(h3.latlng_to_cell(lat, lon, self.resolution))

    def polygon(self, lat: float, lon: float) -> str | None:
        """The polygon holding the point; polygons are tested per H3 cell at res 12 (~300 m²) and cached."""
        if not self.polygons:
            return None
        fine = str(h3.latlng_to_cell(lat, lon, 12))
        if fine in self._cache:
            return self._cache[fine]
        name = next((p.name for p in self.polygons if p.contains(lat, lon)), None)
        if len(self._cache) < 500_000:
            self._cache[fine] = name
        return name

    def keys(self, lat: float, lon: float) -> list[str]:
        """``h3:<cell>`` and, inside a named polygon, ``poly:<name>``."""
        keys = [h3_key(self.cell(lat, lon))]
        name = self.polygon(lat, lon)
        if name is not None:
            keys.append(f"poly:{name}")
        return keys

    @property
    def cell_area_km2(self) -> float:
        return float(h3.average_hexagon_area(self.resolution, "km^2"))
