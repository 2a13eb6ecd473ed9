"""Zones, lines and the on-device tracker: pure logic, no I/O."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from edge.detectors import Detection
from edge.tracker import IouTracker, iou
from edge.zones import FULL_FRAME, Line, Zone, count_by_zone, crossing, point_in_polygon, polygon_area

LEFT = Zone(name="left", polygon=((0, 0), (0.5, 0), (0.5, 1), (0, 1)))
RIGHT = Zone(name="right", polygon=((0.5, 0), (1, 0), (1, 1), (0.5, 1)))
TRIANGLE = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0))
ACROSS = Line(name="across", a=(0.0, 0.5), b=(1.0, 0.5))  # drawn left to right: forward is down


def det(label: str, x: float, y: float, w: float = 0.1, h: float = 0.2) -> Detection:
    """A box whose foot point is (x, y)."""
    return Detection(label, 0.9, (y - h, x - w / 2, y, x + w / 2))


def test_point_in_polygon() -> None:
    assert point_in_polygon((0.2, 0.2), TRIANGLE)
    assert not point_in_polygon((0.8, 0.8), TRIANGLE)
    assert point_in_polygon((0.5, 0.5), TRIANGLE)  # on the hypotenuse
    assert point_in_polygon((0.0, 0.0), TRIANGLE)  # a vertex


@given(st.floats(0, 1), st.floats(0, 1))
def test_full_frame_contains_every_point(x: float, y: float) -> None:
    assert FULL_FRAME.contains((x, y))


def test_polygon_area() -> None:
    assert polygon_area(LEFT.polygon) == pytest.approx(0.5)
    assert polygon_area(TRIANGLE) == pytest.approx(0.5)


def test_count_by_zone_uses_foot_point_and_filters_classes() -> None:
    dets = [det("person", 0.2, 0.9), det("person", 0.7, 0.9), det("person", 0.3, 0.5), det("car", 0.8, 0.8)]
    dets.append(det("toothbrush", 0.1, 0.3))
    counts = count_by_zone(dets, [LEFT, RIGHT], frozenset({"person", "car"}))
    assert counts == {"left": Counter(person=2), "right": Counter(person=1, car=1)}
    assert count_by_zone([], [LEFT, RIGHT]) == {"left": Counter(), "right": Counter()}


def test_zone_and_line_outside_frame_are_refused() -> None:
    with pytest.raises(ValidationError, match="outside the frame"):
        Zone(name="bad", polygon=((0, 0), (1.5, 0), (0, 1)))
    with pytest.raises(ValidationError, match="outside the frame"):
        Line(name="bad", a=(0, 0), b=(0, 2))


def test_crossing_direction() -> None:
    assert crossing(ACROSS, (0.5, 0.4), (0.5, 0.6)) == 1  # downwards: forward
    assert crossing(ACROSS, (0.5, 0.6), (0.5, 0.4)) == -1
    assert crossing(ACROSS, (0.5, 0.1), (0.5, 0.3)) == 0  # same side
    short = Line(name="short", a=(0.4, 0.5), b=(0.6, 0.5))
    assert crossing(short, (0.9, 0.4), (0.9, 0.6)) == 0  # beside the line's end
    # Stopping on the line, then going on, counts once.
    assert crossing(ACROSS, (0.5, 0.4), (0.5, 0.5)) == 0
    assert crossing(ACROSS, (0.5, 0.5), (0.5, 0.6)) == 1
    # Reversing the line's drawing reverses forward.
    back = Line(name="back", a=(1.0, 0.5), b=(0.0, 0.5))
    assert crossing(back, (0.5, 0.4), (0.5, 0.6)) == -1


@given(st.floats(0.01, 0.99), st.floats(0.01, 0.49), st.floats(0.51, 0.99))
def test_any_vertical_move_across_counts_once(x: float, y0: float, y1: float) -> None:
    assert crossing(ACROSS, (x, y0), (x, y1)) == 1
    assert crossing(ACROSS, (x, y1), (x, y0)) == -1


def test_iou() -> None:
    assert iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert iou((0, 0, 0.5, 0.5), (0.5, 0.5, 1, 1)) == 0.0
    assert iou((0, 0, 1, 1), (0, 0, 0.5, 1)) == pytest.approx(0.5)


def test_tracker_follows_two_walkers_and_keeps_identities_apart() -> None:
    tracker = IouTracker(min_hits=2)
    ids: dict[str, set[int]] = {"a": set(), "b": set()}
    for i in range(20):
        t = i * 0.2
        a = det("person", 0.2 + 0.01 * i, 0.5)
        b = det("person", 0.8 - 0.01 * i, 0.7)
        tracker.update(t, [a, b])
        for track in tracker.tracks:
            ids["a" if track.foot[0] < 0.5 and abs(track.foot[1] - 0.5) < 0.01 else "b"].add(track.id)
    assert len(ids["a"]) == 1
    assert len(ids["b"]) == 1
    assert ids["a"] != ids["b"]
    (walker,) = [t for t in tracker.tracks if t.id in ids["a"]]
    assert walker.velocity[0] == pytest.approx(0.05, rel=0.1)  # 0.01 per 0.2 s


def test_tracker_forgets_lost_tracks_and_confirms_after_min_hits() -> None:
    tracker = IouTracker(min_hits=2, max_age_s=1.0)
    assert tracker.update(0.0, [det("person", 0.5, 0.5)]) == []  # one hit: not confirmed yet
    assert len(tracker.update(0.1, [det("person", 0.5, 0.5)])) == 1
    tracker.update(0.5, [])
    assert len(tracker.tracks) == 1  # missed briefly: kept
    tracker.update(2.0, [])
    assert tracker.tracks == []  # gone after max_age_s


def test_tracker_never_matches_across_classes() -> None:
    tracker = IouTracker(min_hits=1)
    tracker.update(0.0, [det("person", 0.5, 0.5)])
    tracker.update(0.1, [det("suitcase", 0.5, 0.5)])
    assert sorted(t.label for t in tracker.tracks) == ["person", "suitcase"]
