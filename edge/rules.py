"""Event rules as pure logic over tracks: the decree n° 2023-828 families a COCO detector supports.

* ``crowd_density``: people in a zone, per m² when the zone's ``area_m2`` is set
  (else per zone), stay above ``threshold`` for ``min_duration_s``;
* ``crowd_movement``: the mean velocity of the people in a zone departs from its
  recent average by more than ``threshold`` (frame widths per second);
* ``intrusion``: a person stays in a forbidden zone for ``dwell_s``;
* ``wrong_way``: a tracked object crosses a line against its ``allowed`` direction;
* ``person_down``: a person's box is wider than tall (``aspect``) for ``min_duration_s``;
* ``abandoned_object``: a bag or suitcase stays still for ``still_s`` with no
  person within ``person_radius``.

Fire and weapon detection need models trained for them; the default COCO SSD
has no such class, so those rules do not exist here until such a model is
configured (the config refuses them with that explanation).

The engine keeps per-track state keyed by in-memory track ids; what it
returns (:class:`Firing`) names a rule, a place, a time and a measure — never
a track.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.tracker import Track
from edge.zones import Line, Zone, crossing

__all__ = [
    "UNSUPPORTED_RULES",
    "AbandonedObjectRule",
    "Crossing",
    "CrowdDensityRule",
    "CrowdMovementRule",
    "Firing",
    "IntrusionRule",
    "PersonDownRule",
    "Rule",
    "RuleEngine",
    "WrongWayRule",
    "line_crossings",
]

#: Decree families that need a model class the default detector lacks.
UNSUPPORTED_RULES = {
    "fire": "fire and smoke detection needs a model trained for it; the COCO SSD has no fire class",
    "weapon": "weapon detection needs a model trained for it; the COCO SSD has no weapon class",
}


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    cooldown_s: float = Field(default=60.0, ge=0, description="Quiet time after firing, per place.")


class CrowdDensityRule(_Rule):
    type: Literal["crowd_density"] = "crowd_density"
    zone: str
    threshold: float = Field(gt=0, description="People per m² (zone with area_m2) or people in the zone.")
    min_duration_s: float = Field(default=5.0, ge=0)


class CrowdMovementRule(_Rule):
    type: Literal["crowd_movement"] = "crowd_movement"
    zone: str
    threshold: float = Field(default=0.15, gt=0, description="Change of mean velocity, frame widths per s.")
    min_people: int = Field(default=3, ge=1)
    smoothing_s: float = Field(default=20.0, gt=0, description="Time constant of the recent average.")


class IntrusionRule(_Rule):
    type: Literal["intrusion"] = "intrusion"
    zone: str
    dwell_s: float = Field(default=3.0, ge=0)
    classes: tuple[str, ...] = ("person",)


class WrongWayRule(_Rule):
    type: Literal["wrong_way"] = "wrong_way"
    line: str
    allowed: Literal["forward", "backward"]
    classes: tuple[str, ...] = ("person", "bicycle", "car", "motorcycle", "bus", "truck")
    cooldown_s: float = Field(default=10.0, ge=0)


class PersonDownRule(_Rule):
    type: Literal["person_down"] = "person_down"
    zone: str
    aspect: float = Field(
        default=1.3, gt=1, description="Box width / height (in pixels) above which a person lies."
    )
    min_duration_s: float = Field(default=5.0, ge=0)


class AbandonedObjectRule(_Rule):
    type: Literal["abandoned_object"] = "abandoned_object"
    zone: str
    classes: tuple[str, ...] = ("backpack", "handbag", "suitcase")
    still_s: float = Field(default=30.0, gt=0)
    max_move: float = Field(default=0.02, gt=0, description="Movement allowed while 'still', frame units.")
    person_radius: float = Field(default=0.12, gt=0, description="An owner within this distance attends it.")


Rule = Annotated[
    CrowdDensityRule
    | CrowdMovementRule
    | IntrusionRule
    | WrongWayRule
    | PersonDownRule
    | AbandonedObjectRule,
    Field(discriminator="type"),
]


@dataclass(frozen=True, slots=True)
class Crossing:
    """A tracked object crossed a line during the last frame."""

    line: str
    label: str
    direction: int  # +1 forward, -1 backward
    track_id: int  # in memory only, for the rules; never published


@dataclass(frozen=True, slots=True)
class Firing:
    """A rule fired; the agent turns it into a wire alert (coarsened, anonymous)."""

    rule: str
    zone: str | None
    line: str | None
    ts: float
    value: float
    threshold: float


def _dist(a: tuple[float, float], b: tuple[float, float]) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


class RuleEngine:
    """Evaluates the configured rules frame after frame; deterministic, no I/O."""

    def __init__(self, rules: Sequence[Rule], zones: Mapping[str, Zone], lines: Mapping[str, Line]) -> None:
        for rule in rules:
            place = getattr(rule, "zone", None) or getattr(rule, "line", None)
            known = zones if hasattr(rule, "zone") else lines
            if place not in known:
                kind = "zone" if hasattr(rule, "zone") else "line"
                raise ValueError(f"rule {rule.type} names {kind} {place!r}, which is not configured")
        self.rules = list(rules)
        self.zones = dict(zones)
        self.lines = dict(lines)
        self._last_fired: dict[tuple[str, str], float] = {}
        self._above_since: dict[tuple[str, str], float] = {}
        self._flow_avg: dict[str, tuple[float, float, float]] = {}  # zone -> (vx, vy, last ts)
        self._track_since: dict[tuple[str, int], float] = {}  # (rule key, track id) -> since
        self._anchor: dict[int, tuple[float, float]] = {}  # track id -> where it became still
        self._fired_tracks: set[tuple[str, int]] = set()

    def update(
        self, ts: float, tracks: Sequence[Track], crossings: Sequence[Crossing], frame_aspect: float
    ) -> list[Firing]:
        """Feed one frame's live tracks and crossings; returns the rules that fired now."""
        alive = {t.id for t in tracks}
        fired: list[Firing] = []
        for rule in self.rules:
            firing = self._evaluate(rule, ts, tracks, crossings, frame_aspect)
            if firing is None:
                continue
            key = (rule.type, firing.zone or firing.line or "")
            if ts - self._last_fired.get(key, -math.inf) >= rule.cooldown_s:
                self._last_fired[key] = ts
                fired.append(firing)
        # Forget state of tracks that are gone: nothing about them outlives them.
        self._track_since = {k: v for k, v in self._track_since.items() if k[1] in alive}
        self._anchor = {k: v for k, v in self._anchor.items() if k in alive}
        self._fired_tracks = {k for k in self._fired_tracks if k[1] in alive}
        return fired

    def _in_zone(self, zone: str, tracks: Sequence[Track], classes: Sequence[str]) -> list[Track]:
        z = self.zones[zone]
        return [t for t in tracks if t.label in classes and z.contains(t.foot)]

    def _evaluate(
        self, rule: Rule, ts: float, tracks: Sequence[Track], crossings: Sequence[Crossing], aspect: float
    ) -> Firing | None:
        if isinstance(rule, CrowdDensityRule):
            people = self._in_zone(rule.zone, tracks, ("person",))
            area = self.zones[rule.zone].area_m2
            density = len(people) / area if area else float(len(people))
            key = ("crowd_density", rule.zone)
            if density < rule.threshold:
                self._above_since.pop(key, None)
                return None
            since = self._above_since.setdefault(key, ts)
            if ts - since >= rule.min_duration_s:
                return Firing(rule.type, rule.zone, None, ts, round(density, 3), rule.threshold)
            return None
        if isinstance(rule, CrowdMovementRule):
            people = self._in_zone(rule.zone, tracks, ("person",))
            if len(people) < rule.min_people:
                return None
            vx = sum(t.velocity[0] for t in people) / len(people)
            vy = sum(t.velocity[1] for t in people) / len(people)
            prev = self._flow_avg.get(rule.zone)
            if prev is None:
                self._flow_avg[rule.zone] = (vx, vy, ts)
                return None
            change = math.hypot(vx - prev[0], vy - prev[1])
            alpha = 1.0 - math.exp(-max(ts - prev[2], 0.0) / rule.smoothing_s)
            self._flow_avg[rule.zone] = (
                prev[0] + alpha * (vx - prev[0]),
                prev[1] + alpha * (vy - prev[1]),
                ts,
            )
            if change > rule.threshold:
                return Firing(rule.type, rule.zone, None, ts, round(change, 3), rule.threshold)
            return None
        if isinstance(rule, IntrusionRule):
            return self._dwell(
                rule.type, rule.zone, self._in_zone(rule.zone, tracks, rule.classes), ts, rule.dwell_s
            )
        if isinstance(rule, WrongWayRule):
            against = -1 if rule.allowed == "forward" else 1
            wrong = [
                c
                for c in crossings
                if c.line == rule.line and c.direction == against and c.label in rule.classes
            ]
            if wrong:
                return Firing(rule.type, None, rule.line, ts, float(len(wrong)), 1.0)
            return None
        if isinstance(rule, PersonDownRule):
            lying = [
                t
                for t in self._in_zone(rule.zone, tracks, ("person",))
                if (t.box[3] - t.box[1]) * aspect > rule.aspect * (t.box[2] - t.box[0])
            ]
            return self._dwell(rule.type, rule.zone, lying, ts, rule.min_duration_s)
        return self._abandoned(rule, ts, tracks)

    def _dwell(
        self, name: str, zone: str, present: Sequence[Track], ts: float, needed: float
    ) -> Firing | None:
        longest = 0.0
        for t in present:
            key = (f"{name}:{zone}", t.id)
            since = self._track_since.setdefault(key, ts)
            if ts - since >= needed and key not in self._fired_tracks:
                self._fired_tracks.add(key)  # once per object and place
                longest = max(longest, ts - since)
        present_ids = {t.id for t in present}
        for key in [k for k in self._track_since if k[0] == f"{name}:{zone}" and k[1] not in present_ids]:
            del self._track_since[key]  # left the zone (or stood up): the clock restarts
        if longest:
            return Firing(name, zone, None, ts, round(longest, 1), needed)
        return None

    def _abandoned(self, rule: AbandonedObjectRule, ts: float, tracks: Sequence[Track]) -> Firing | None:
        people = [t.foot for t in tracks if t.label == "person"]
        longest = 0.0
        for obj in self._in_zone(rule.zone, tracks, rule.classes):
            center = ((obj.box[1] + obj.box[3]) / 2, (obj.box[0] + obj.box[2]) / 2)
            anchor = self._anchor.get(obj.id)
            key = (f"abandoned:{rule.zone}", obj.id)
            attended = any(_dist(center, p) <= rule.person_radius for p in people)
            if anchor is None or _dist(anchor, center) > rule.max_move or attended:
                self._anchor[obj.id] = center
                self._track_since[key] = ts
                continue
            still = ts - self._track_since.setdefault(key, ts)
            if still >= rule.still_s and key not in self._fired_tracks:
                self._fired_tracks.add(key)
                longest = max(longest, still)
        if longest:
            return Firing(rule.type, rule.zone, None, ts, round(longest, 1), rule.still_s)
        return None


def line_crossings(tracks: Sequence[Track], lines: Sequence[Line]) -> list[Crossing]:
    """Crossings made by the tracks that moved in the last frame."""
    found: list[Crossing] = []
    for t in tracks:
        if t.prev_foot is None:
            continue
        for line in lines:
            direction = crossing(line, t.prev_foot, t.foot)
            if direction:
                found.append(Crossing(line.name, t.label, direction, t.id))
    return found
