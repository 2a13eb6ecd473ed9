"""Zone geometry: which zone an object stands in (pure functions, no I/O)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge.detectors import Detection

__all__ = ["FULL_FRAME", "Line", "Zone", "count_by_zone", "crossing", "point_in_polygon", "polygon_area"]

Point = tuple[float, float]


class Zone(BaseModel):
    """A named polygon in normalised image coordinates (x right, y down, both in [0, 1])."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", description="Published with each event.")
    polygon: tuple[Point, ...] = Field(min_length=3, description="Vertices, in order.")

    @field_validator("polygon")
    @classmethod
    def _inside_frame(cls, value: tuple[Point, ...]) -> tuple[Point, ...]:
        for x, y in value:
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError(f"vertex ({x}, {y}) is outside the frame: use coordinates in [0, 1]")
        return value

    area_m2: float | None = Field(
        default=None, gt=0, description="Ground area the zone covers, for crowd density in people/m²."
    )

    def contains(self, point: Point) -> bool:
        """True when the point lies inside the polygon or on its edge."""
        return point_in_polygon(point, self.polygon)


class Line(BaseModel):
    """A directed counting line from ``a`` to ``b`` in normalised image coordinates.

    *Forward* is the direction you face when you stand at ``a``, look at ``b`` and
    turn right (image coordinates, y down): for a line drawn left to right across
    the picture, forward is downwards, i.e. towards the camera.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", description="Published with line counts.")
    a: Point = Field(description="Start point (x, y).")
    b: Point = Field(description="End point (x, y).")

    @field_validator("a", "b")
    @classmethod
    def _inside_frame(cls, value: Point) -> Point:
        if not (0.0 <= value[0] <= 1.0 and 0.0 <= value[1] <= 1.0):
            raise ValueError(f"point {value} is outside the frame: use coordinates in [0, 1]")
        return value


FULL_FRAME = Zone(name="all", polygon=((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)))


def point_in_polygon(point: Point, polygon: Sequence[Point]) -> bool:
    """Even-odd ray casting; points on an edge count as inside."""
    x, y = point
    inside = False
    n = len(polygon)
    for i in range(n):
        x1, y1 = polygon[i]
        x2, y2 = polygon[(i + 1) % n]
        # On the segment (collinear and within its bounding box): inside.
        cross = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
        if abs(cross) < 1e-12 and min(x1, x2) <= x <= max(x1, x2) and min(y1, y2) <= y <= max(y1, y2):
            return True
        if (y1 > y) != (y2 > y):
            x_cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            if x < x_cross:
                inside = not inside
    return inside


def polygon_area(polygon: Sequence[Point]) -> float:
    """Shoelace area, in normalised image units."""
    n = len(polygon)
    twice = sum(
        polygon[i][0] * polygon[(i + 1) % n][1] - polygon[(i + 1) % n][0] * polygon[i][1] for i in range(n)
    )
    return abs(twice) / 2.0


def _side(a: Point, b: Point, p: Point) -> float:
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def crossing(line: Line, before: Point, after: Point) -> int:
    """+1 when the move before→after crosses the line forwards, -1 backwards, 0 when it does not cross."""
    # A point exactly on the line counts as being on its left side, so a track
    # that stops on the line is counted once, when it leaves the other side.
    right_before = _side(line.a, line.b, before) > 0
    right_after = _side(line.a, line.b, after) > 0
    if right_before == right_after:
        return 0
    # The move must also pass between a and b, not beyond the line's ends.
    t1, t2 = _side(before, after, line.a), _side(before, after, line.b)
    if t1 * t2 > 0:
        return 0
    # In image coordinates (y down) "right of a→b" is where _side is positive.
    return 1 if right_after else -1


def count_by_zone(
    detections: Iterable[Detection], zones: Sequence[Zone], classes: frozenset[str] | None = None
) -> dict[str, Counter[str]]:
    """Count detections per zone and class, by where each object stands (its foot point).

    Every zone appears in the result, even when empty, so that "nobody" is data too.
    """
    result: dict[str, Counter[str]] = {zone.name: Counter() for zone in zones}
    for det in detections:
        if classes is not None and det.label not in classes:
            continue
        foot = det.foot
        for zone in zones:
            if zone.contains(foot):
                result[zone.name][det.label] += 1
    return result
