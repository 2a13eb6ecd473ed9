"""Zone membership and window aggregation: pure logic, no I/O."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from edge.aggregate import WindowAggregator
from edge.detectors import Detection
from edge.zones import FULL_FRAME, Zone, count_by_zone, point_in_polygon
from vigie import wire

LEFT = Zone(name="left", polygon=((0, 0), (0.5, 0), (0.5, 1), (0, 1)))
RIGHT = Zone(name="right", polygon=((0.5, 0), (1, 0), (1, 1), (0.5, 1)))
TRIANGLE = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0))


def det(label: str, x: float, y: float) -> Detection:
    # A small box whose foot point is (x, y).
    return Detection(label, 0.9, (y - 0.1, x - 0.05, y, x + 0.05))


def test_point_in_polygon() -> None:
    assert point_in_polygon((0.2, 0.2), TRIANGLE)
    assert not point_in_polygon((0.8, 0.8), TRIANGLE)
    assert point_in_polygon((0.5, 0.5), TRIANGLE)  # on the hypotenuse
    assert point_in_polygon((0.0, 0.0), TRIANGLE)  # a vertex


@given(st.floats(0, 1), st.floats(0, 1))
def test_full_frame_contains_every_point(x: float, y: float) -> None:
    assert FULL_FRAME.contains((x, y))


def test_count_by_zone_uses_foot_point_and_filters_classes() -> None:
    dets = [
        det("person", 0.2, 0.9),
        det("person", 0.7, 0.9),
        det("person", 0.3, 0.5),
        det("car", 0.8, 0.8),
        det("toothbrush", 0.1, 0.1),
    ]
    counts = count_by_zone(dets, [LEFT, RIGHT], frozenset({"person", "car"}))
    assert counts == {"left": Counter(person=2), "right": Counter(person=1, car=1)}


def test_every_zone_is_reported_even_empty() -> None:
    assert count_by_zone([], [LEFT, RIGHT]) == {"left": Counter(), "right": Counter()}


def test_zone_outside_frame_is_refused() -> None:
    with pytest.raises(ValidationError, match="outside the frame"):
        Zone(name="bad", polygon=((0, 0), (1.5, 0), (0, 1)))


def aggregator() -> WindowAggregator:
    return WindowAggregator(site="s", device="d", zones=["left", "right"], window_s=10, model_ref="m@1")


def test_window_emits_peak_and_mean_per_zone_when_it_closes() -> None:
    agg = aggregator()
    t0 = 1_700_000_040.0
    assert agg.add(t0 + 1, {"left": Counter(person=2), "right": Counter()}) == []
    assert agg.add(t0 + 5, {"left": Counter(person=4, bus=1), "right": Counter(car=1)}) == []
    closed = agg.add(t0 + 12, {"left": Counter(person=1), "right": Counter()})
    by_zone = {e.zone: e for e in closed}
    assert set(by_zone) == {"left", "right"}
    left = by_zone["left"]
    assert left.window_start == 1_700_000_040
    assert left.frames == 2
    assert left.counts == {"bus": 1, "person": 4}
    assert left.mean_counts == {"bus": 0.5, "person": 3.0}
    assert by_zone["right"].counts == {"car": 1}
    # The next window holds the third frame.
    (nxt_left, nxt_right) = agg.flush()
    assert nxt_left.window_start == 1_700_000_050
    assert nxt_left.counts == {"person": 1}
    assert nxt_right.counts == {}
    assert agg.flush() == []


def test_events_are_valid_wire_messages_with_distinct_ids() -> None:
    agg = aggregator()
    agg.add(1_700_000_041.3, {"left": Counter(person=1)})
    events = agg.flush()
    assert len({e.id for e in events}) == 2
    for e in events:
        assert wire.decode(wire.encode(e)) == e
        assert e.window_start % 10 == 0  # coarsened: no second-level timing


@given(st.lists(st.tuples(st.floats(0, 600), st.integers(0, 30)), min_size=1, max_size=60))
def test_peak_is_max_and_mean_is_average(frames: list[tuple[float, int]]) -> None:
    agg = aggregator()
    t0 = 1_700_000_000
    events: list[wire.ZoneCountEvent] = []
    for offset, n in sorted(frames):
        events += agg.add(t0 + offset, {"left": Counter(person=n)})
    events += agg.flush()
    left = [e for e in events if e.zone == "left"]
    assert sum(e.frames for e in left) == len(frames)
    assert max(e.counts.get("person", 0) for e in left) == max(n for _, n in frames)
