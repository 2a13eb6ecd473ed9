"""On-device multi-object tracking (IoU matching with constant-velocity prediction, SORT-style).

Track identities are small integers that live only in this object's memory:
they are never published, stored or logged. Rules read tracks; what leaves
the device is counts and alerts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from edge.detectors import Detection

__all__ = ["IouTracker", "Track", "iou"]

Box = tuple[float, float, float, float]  # ymin, xmin, ymax, xmax, normalised


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    ymin, xmin = max(a[0], b[0]), max(a[1], b[1])
    ymax, xmax = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, ymax - ymin) * max(0.0, xmax - xmin)
    if inter <= 0:
        return 0.0
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area_a + area_b - inter)


@dataclass(slots=True)
class Track:
    """One object followed across frames (in memory only)."""

    id: int
    label: str
    box: Box
    first_ts: float
    last_ts: float
    hits: int = 1
    velocity: tuple[float, float] = (0.0, 0.0)  # foot point, normalised units per second
    prev_foot: tuple[float, float] | None = None  # foot before the last update, for line crossings
    history: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=300))

    @property
    def foot(self) -> tuple[float, float]:
        """Bottom centre (x, y) of the current box."""
        return ((self.box[1] + self.box[3]) / 2.0, self.box[2])

    def predicted(self, ts: float) -> Box:
        """The box moved by the current velocity to time ``ts``."""
        dt = max(0.0, ts - self.last_ts)
        dx, dy = self.velocity[0] * dt, self.velocity[1] * dt
        ymin, xmin, ymax, xmax = self.box
        return (ymin + dy, xmin + dx, ymax + dy, xmax + dx)


class IouTracker:
    """Greedy IoU matching per class; a track dies after ``max_age_s`` without a match."""

    def __init__(self, *, iou_threshold: float = 0.25, max_age_s: float = 1.5, min_hits: int = 2) -> None:
        self.iou_threshold = iou_threshold
        self.max_age_s = max_age_s
        self.min_hits = min_hits
        self._tracks: list[Track] = []
        self._next_id = 1

    @property
    def tracks(self) -> list[Track]:
        """Confirmed tracks still alive (including those not matched in the last frame)."""
        return [t for t in self._tracks if t.hits >= self.min_hits]

    @property
    def tentative(self) -> list[Track]:
        """Tracks not confirmed yet (one match): those matched in the last frame were born there.

        Not counted as such: :func:`edge.occupancy.occupants` counts one only where a confirmed
        track was lost (a person reappearing after an occlusion).
        """
        return [t for t in self._tracks if t.hits < self.min_hits]

    def update(self, ts: float, detections: Sequence[Detection]) -> list[Track]:
        """Match detections to tracks; returns the confirmed tracks matched in this frame."""
        pairs: list[tuple[float, int, int]] = []
        predicted = [t.predicted(ts) for t in self._tracks]
        for ti, track in enumerate(self._tracks):
            for di, det in enumerate(detections):
                if det.label == track.label:
                    score = iou(predicted[ti], det.box)
                    if score >= self.iou_threshold:
                        pairs.append((score, ti, di))
        pairs.sort(reverse=True)
        used_t: set[int] = set()
        used_d: set[int] = set()
        matched: list[Track] = []
        for _, ti, di in pairs:
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            track = self._tracks[ti]
            self._move(track, ts, detections[di].box)
            matched.append(track)
        for di, det in enumerate(detections):
            if di not in used_d:
                track = Track(self._next_id, det.label, det.box, ts, ts)
                track.history.append((ts, *track.foot))
                self._next_id += 1
                self._tracks.append(track)
        self._tracks = [t for t in self._tracks if ts - t.last_ts <= self.max_age_s]
        return [t for t in matched if t.hits >= self.min_hits]

    @staticmethod
    def _move(track: Track, ts: float, box: Box) -> None:
        old = track.foot
        dt = ts - track.last_ts
        track.box = box
        new = track.foot
        if dt > 0:
            vx, vy = (new[0] - old[0]) / dt, (new[1] - old[1]) / dt
            # Smooth the velocity: detections jitter by a few pixels from frame to frame.
            track.velocity = (0.5 * track.velocity[0] + 0.5 * vx, 0.5 * track.velocity[1] + 0.5 * vy)
        track.prev_foot = old
        track.last_ts = ts
        track.hits += 1
        track.history.append((ts, *new))
