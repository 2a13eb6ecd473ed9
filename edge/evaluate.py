"""Counting accuracy on hand-labelled frames: the agent's detector against people counted by hand.

A labelled set is a CSV (``frame,count,uncertain,points``: see
``shared/data/labels/README.md``) over the frames of one video. The detector
is the one the agent builds (same model, thresholds, letterbox and tiling); a
frame's count is what :func:`edge.zones.count_by_zone` makes of what the
agent counts: with a :class:`Horizon`, the occupants of its tracker run over
the frames before (video, as the agent counts); without, the frame's raw
boxes (a still photo). Scoring and formatting are pure; only :func:`load_labels`,
:func:`read_frames` and :func:`evaluate` (timing) touch the outside.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.detectors import Detection, Detector
from edge.occupancy import COAST_S, occupants
from edge.tracker import IouTracker
from edge.zones import FULL_FRAME, Zone, count_by_zone
from vigie.exceptions import ConfigError

__all__ = [
    "Accuracy",
    "FrameResult",
    "Horizon",
    "LabelledFrame",
    "Report",
    "accuracy",
    "agent_horizon",
    "evaluate",
    "format_report",
    "load_labels",
    "read_frames",
    "zone_truth",
]

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class LabelledFrame:
    """One hand-counted frame."""

    index: int
    count: int
    uncertain: int = 0
    points: tuple[Point, ...] = ()
    """Foot points in full-frame pixels; empty when the set has none."""


@dataclass(frozen=True, slots=True)
class FrameResult:
    """Counted by hand and by the pipeline, per zone, and the detector's time on the frame."""

    index: int
    truth: Mapping[str, int]
    predicted: Mapping[str, int]
    ms: float


@dataclass(frozen=True, slots=True)
class Accuracy:
    """Errors of predicted counts: mean absolute, mean signed (bias > 0: overcounts), worst."""

    n: int
    mae: float
    bias: float
    worst: int


@dataclass(frozen=True, slots=True)
class Report:
    """An evaluation run: one result per labelled frame."""

    label: str
    zones: tuple[str, ...]
    frames: tuple[FrameResult, ...]
    settings: Mapping[str, object] = field(default_factory=dict)

    def zone_accuracy(self, zone: str) -> Accuracy:
        return accuracy([(f.predicted[zone], f.truth[zone]) for f in self.frames if zone in f.truth])

    @property
    def ms_per_frame(self) -> float:
        return float(np.mean([f.ms for f in self.frames])) if self.frames else 0.0


def accuracy(pairs: Sequence[tuple[int, int]]) -> Accuracy:
    """Accuracy of (predicted, truth) pairs."""
    if not pairs:
        return Accuracy(0, 0.0, 0.0, 0)
    errors = np.array([p - t for p, t in pairs], dtype=float)
    return Accuracy(len(pairs), float(np.abs(errors).mean()), float(errors.mean()), int(np.abs(errors).max()))


def _row(row: Mapping[str, str], line: int, path: Path) -> LabelledFrame:
    try:
        points = tuple((float(x), float(y)) for x, y in json.loads(row.get("points") or "[]"))
        frame = LabelledFrame(int(row["frame"]), int(row["count"]), int(row.get("uncertain") or 0), points)
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"{path}: line {line}: {exc!r} — expected columns frame,count[,uncertain,points] with "
            'integers and a JSON list of [x, y] pixels, e.g. 20,2,0,"[[378,272],[420,250]]"'
        ) from None
    if points and len(points) != frame.count:
        raise ConfigError(
            f"{path}: line {line}: count is {frame.count} but {len(points)} foot points are given: "
            "give one point per person counted, or none"
        )
    return frame


def load_labels(path: Path) -> list[LabelledFrame]:
    """Read a labelled set.

    Raises:
        ConfigError: naming the file, the line and the expected format.
    """
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise ConfigError(f"labels file {path}: cannot read: {exc.strerror}") from None
    frames = [_row(row, i + 2, path) for i, row in enumerate(rows)]
    if not frames:
        raise ConfigError(f"labels file {path} has no labelled frames")
    return frames


def read_frames(video: Path, indices: Sequence[int]) -> dict[int, npt.NDArray[np.uint8]]:
    """The RGB frames of ``video`` at the given 0-based indices (seeked as the labels were made).

    Raises:
        ConfigError: when the video cannot be read or is shorter than a labelled index.
    """
    import cv2

    if not video.is_file():
        raise ConfigError(f"video {video} not found: pass the footage the labels were made on")
    cap = cv2.VideoCapture(str(video))
    frames: dict[int, npt.NDArray[np.uint8]] = {}
    try:
        for i in sorted(set(indices)):
            cap.set(cv2.CAP_PROP_POS_FRAMES, i)
            ok, bgr = cap.read()
            if not ok:
                raise ConfigError(f"video {video}: cannot read frame {i} (is it the labelled footage?)")
            frames[i] = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
    finally:
        cap.release()
    return frames


def zone_truth(frame: LabelledFrame, size: tuple[int, int], zones: Sequence[Zone]) -> dict[str, int]:
    """Hand counts per zone from the foot points (the frame's count for the whole frame).

    A zone other than the whole frame has no truth when the set has no points.
    """
    width, height = size
    truth: dict[str, int] = {}
    for zone in zones:
        if zone.polygon == FULL_FRAME.polygon:
            truth[zone.name] = frame.count
        elif frame.points or frame.count == 0:
            truth[zone.name] = sum(zone.contains((x / width, y / height)) for x, y in frame.points)
    return truth


@dataclass(frozen=True, slots=True)
class Horizon:
    """Count as the agent does on video: the occupants of its tracker, run over the frames before.

    ``frames`` frames, ``stride`` video frames apart (the agent's rate), end at
    the labelled frame; the count is :func:`edge.occupancy.occupants` of the
    confirmed tracks then (``coast_s``: how long a lost track still counts).
    A tracker forgets a track unmatched for 1.5 s, so about 1.5 s of frames
    (:func:`agent_horizon`) gives what the agent, running all along, counts.
    """

    frames: int
    stride: int
    frame_period_s: float
    coast_s: float = COAST_S

    def indices(self, index: int) -> list[int]:
        return [i for i in range(index - (self.frames - 1) * self.stride, index + 1, self.stride) if i >= 0]


def agent_horizon(video_fps: float, fps: float) -> Horizon:
    """The horizon that reproduces the agent at ``fps`` on footage recorded at ``video_fps``."""
    stride = max(1, round(video_fps / fps))
    period = stride / video_fps
    frames = math.ceil(IouTracker().max_age_s / period) + 1
    return Horizon(frames=frames, stride=stride, frame_period_s=period)


def _tracked(
    detector: Detector, frames: Mapping[int, npt.NDArray[np.uint8]], index: int, horizon: Horizon, label: str
) -> list[Detection]:
    """What the agent counts at frame ``index`` after the horizon's frames (edge.pipeline)."""
    tracker = IouTracker()
    ts = 0.0
    for i in horizon.indices(index):
        ts = i * horizon.frame_period_s / horizon.stride
        tracker.update(ts, [d for d in detector.detect(frames[i]) if d.label == label])
    return occupants(tracker.tracks, ts, tentative=tracker.tentative, coast_s=horizon.coast_s)


def evaluate(
    detector: Detector,
    frames: Mapping[int, npt.NDArray[np.uint8]],
    labels: Sequence[LabelledFrame],
    zones: Sequence[Zone] = (FULL_FRAME,),
    *,
    label: str = "person",
    settings: Mapping[str, object] | None = None,
    horizon: Horizon | None = None,
) -> Report:
    """Run the detector on every labelled frame and count ``label`` per zone, timing each call.

    With a ``horizon``, ``frames`` must also hold the frames before each
    labelled one (:meth:`Horizon.indices`) and ms/frame is per analysed frame.
    """
    first = frames[labels[0].index]
    detector.detect(first)  # warm-up: the first call allocates and is not what a running agent costs
    results: list[FrameResult] = []
    for lab in labels:
        rgb = frames[lab.index]
        t0 = time.perf_counter()
        if horizon is None:
            found = detector.detect(rgb)
            ms = (time.perf_counter() - t0) * 1000.0
        else:
            found = _tracked(detector, frames, lab.index, horizon, label)
            ms = (time.perf_counter() - t0) * 1000.0 / len(horizon.indices(lab.index))
        counted = count_by_zone(found, zones, frozenset({label}))
        predicted = {name: counter[label] for name, counter in counted.items()}
        truth = zone_truth(lab, (rgb.shape[1], rgb.shape[0]), zones)
        results.append(FrameResult(lab.index, truth, predicted, ms))
    return Report(label, tuple(z.name for z in zones), tuple(results), dict(settings or {}))


def format_report(reports: Sequence[Report], *, per_frame: bool = False) -> str:
    """One row per setting and zone: MAE, bias, worst error and ms/frame; optionally each frame."""
    lines = [
        f"{'setting':<40} {'zone':<10} {'frames':>6} {'MAE':>6} {'bias':>6} {'worst':>5} {'ms/frame':>9}"
    ]
    for report in reports:
        setting = " ".join(f"{k}={v}" for k, v in report.settings.items())
        for zone in report.zones:
            acc = report.zone_accuracy(zone)
            if not acc.n:
                lines.append(f"{setting:<40} {zone:<10} {'no foot points: no zone truth':>36}")
                continue
            lines.append(
                f"{setting:<40} {zone:<10} {acc.n:>6} {acc.mae:>6.2f} {acc.bias:>+6.2f} {acc.worst:>5} "
                f"{report.ms_per_frame:>9.1f}"
            )
        if per_frame:
            for f in report.frames:
                cells = " ".join(f"{z}={f.predicted[z]}/{f.truth.get(z, '?')}" for z in report.zones)
                lines.append(f"    frame {f.index:>5}: {cells}  (counted/hand)")
    return "\n".join(lines)
