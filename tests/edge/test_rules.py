"""Every event rule on synthetic track sequences (tracker + engine, pure), and on real footage."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from edge.detectors import Detection
from edge.rules import (
    AbandonedObjectRule,
    CrowdDensityRule,
    CrowdMovementRule,
    Firing,
    IntrusionRule,
    PersonDownRule,
    Rule,
    RuleEngine,
    WrongWayRule,
    line_crossings,
)
from edge.tracker import IouTracker
from edge.zones import FULL_FRAME, Line, Zone

SQUARE = Zone(name="square", polygon=((0, 0), (1, 0), (1, 1), (0, 1)), area_m2=50)
NOGO = Zone(name="tracks", polygon=((0.6, 0.6), (1, 0.6), (1, 1), (0.6, 1)))
DOOR = Line(name="door", a=(0.0, 0.5), b=(1.0, 0.5))  # forward = downwards
FPS = 5.0
Scene = Callable[[float], list[Detection]]


def box(label: str, cx: float, foot_y: float, w: float = 0.06, h: float = 0.2) -> Detection:
    return Detection(label, 0.9, (foot_y - h, cx - w / 2, foot_y, cx + w / 2))


def run(rules: Sequence[Rule], scene: Scene, seconds: float, aspect: float = 16 / 9) -> list[Firing]:
    """Play a scene (time -> detections) through the tracker and the rules at 5 fps."""
    engine = RuleEngine(rules, {z.name: z for z in (SQUARE, NOGO, FULL_FRAME)}, {DOOR.name: DOOR})
    tracker = IouTracker()
    fired: list[Firing] = []
    for i in range(int(seconds * FPS)):
        t = i / FPS
        moved = tracker.update(t, scene(t))
        fired += engine.update(t, tracker.tracks, line_crossings(moved, [DOOR]), aspect)
    return fired


def crowd(n: int) -> Scene:
    return lambda t: [box("person", 0.05 + 0.09 * i, 0.3 + 0.05 * (i % 3)) for i in range(n)]


def test_crowd_density_fires_only_when_sustained() -> None:
    rule = CrowdDensityRule(zone="square", threshold=0.15, min_duration_s=3)  # 0.15 people/m² = 7.5 people
    fired = run([rule], crowd(10), 10)
    assert [f.rule for f in fired] == ["crowd_density"]  # once: then the cooldown holds it
    assert fired[0].value == pytest.approx(10 / 50)
    assert fired[0].ts >= 3.0
    assert run([rule], crowd(5), 10) == []


def test_crowd_movement_fires_on_a_sudden_change_of_flow() -> None:
    def scene(t: float) -> list[Detection]:
        # Six people drift right slowly, then at t=6 s all run left.
        x = 0.3 + 0.01 * t if t < 6 else 0.36 - 0.15 * (t - 6)
        return [box("person", x + 0.1 * i, 0.5 + 0.1 * (i % 2), w=0.1, h=0.3) for i in range(6)]

    rule = CrowdMovementRule(zone="square", threshold=0.1, min_people=4)
    fired = run([rule], scene, 8)
    assert fired
    assert all(f.ts >= 6.0 for f in fired)
    assert fired[0].value > 0.1
    steady = run(
        [rule], lambda t: [box("person", 0.2 + 0.01 * t + 0.1 * i, 0.5, w=0.1, h=0.3) for i in range(6)], 8
    )
    assert steady == []


def test_intrusion_needs_the_dwell_time() -> None:
    rule = IntrusionRule(zone="tracks", dwell_s=2)
    fired = run([rule], lambda t: [box("person", 0.8, 0.8)], 5)
    assert [f.rule for f in fired] == ["intrusion"]
    assert fired[0].ts == pytest.approx(2.0, abs=0.3)
    # Passing through in under two seconds does not fire.
    passing = run([rule], lambda t: [box("person", 0.5 + 0.2 * t, 0.8)], 4)
    assert passing == []


def test_wrong_way_only_against_the_allowed_direction() -> None:
    def walk(direction: int) -> Scene:
        return lambda t: [box("person", 0.5, 0.5 - direction * (0.3 - 0.15 * t))]

    only_forward = WrongWayRule(line="door", allowed="forward")
    assert run([only_forward], walk(+1), 4) == []  # downwards = forward: allowed
    fired = run([only_forward], walk(-1), 4)
    assert [(f.rule, f.line) for f in fired] == [("wrong_way", "door")]


def test_person_down_after_the_duration() -> None:
    rule = PersonDownRule(zone="square", min_duration_s=3)
    lying = run([rule], lambda t: [box("person", 0.5, 0.7, w=0.2, h=0.1)], 5)  # wide box, 16:9 frame
    assert [f.rule for f in lying] == ["person_down"]
    assert lying[0].ts >= 3.0
    assert run([rule], lambda t: [box("person", 0.5, 0.7, w=0.06, h=0.25)], 5) == []  # standing
    assert run([rule], lambda t: [box("person", 0.5, 0.7, w=0.2, h=0.1)], 2) == []  # not long enough


def test_abandoned_object_only_when_nobody_is_near() -> None:
    rule = AbandonedObjectRule(zone="square", still_s=5, person_radius=0.15)

    def left_behind(t: float) -> list[Detection]:
        owner = [box("person", 0.5 + (0.0 if t < 2 else 0.3 * (t - 2)), 0.6)] if t < 4 else []
        return [box("suitcase", 0.5, 0.62, w=0.05, h=0.06), *owner]

    fired = run([rule], left_behind, 12)
    assert [f.rule for f in fired] == ["abandoned_object"]
    assert fired[0].value >= 5
    attended = run(
        [rule], lambda t: [box("suitcase", 0.5, 0.62, w=0.05, h=0.06), box("person", 0.52, 0.6)], 12
    )
    assert attended == []


def test_rules_naming_unknown_places_are_refused() -> None:
    with pytest.raises(ValueError, match="zone 'nowhere'"):
        RuleEngine([IntrusionRule(zone="nowhere")], {}, {})


def test_firings_carry_no_track_identity() -> None:
    fired = run([IntrusionRule(zone="tracks", dwell_s=1)], lambda t: [box("person", 0.8, 0.8)], 3)
    assert fired
    assert set(Firing.__dataclass_fields__) == {"rule", "zone", "line", "ts", "value", "threshold"}


def test_rules_on_real_footage(vtest_avi: Path, model_dir: Path) -> None:
    """vtest.avi: people walk across a square; a line across it sees crossings both ways."""
    import cv2

    from edge import model_store
    from edge.detectors.litert import LiteRTDetector

    manifest = model_store.load_manifest()
    model, labels = model_store.locate(manifest, model_dir)
    detector = LiteRTDetector(model, model_store.read_labels(labels), model_ref=manifest.ref, min_score=0.4)
    middle = Line(name="middle", a=(0.5, 0.0), b=(0.5, 1.0))
    engine = RuleEngine(
        [CrowdDensityRule(zone="all", threshold=3, min_duration_s=2)], {"all": FULL_FRAME}, {}
    )
    tracker = IouTracker()
    cap = cv2.VideoCapture(str(vtest_avi))
    directions: list[int] = []
    fired: list[Firing] = []
    for i in range(300):  # 30 s of footage at 10 fps
        ok, bgr = cap.read()
        if not ok:
            break
        dets = [d for d in detector.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)) if d.label == "person"]
        moved = tracker.update(i / 10, dets)
        directions += [c.direction for c in line_crossings(moved, [middle])]
        fired += engine.update(i / 10, tracker.tracks, [], 768 / 576)
    assert directions.count(1) >= 1
    assert directions.count(-1) >= 1
    assert [f.rule for f in fired] == ["crowd_density"]
