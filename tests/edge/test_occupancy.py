"""What the agent counts on video: its tracker's confirmed occupants (edge.occupancy), photos their boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.config import AgentConfig
from edge.detectors import Detection
from edge.occupancy import COAST_S, occupants
from edge.pipeline import Pipeline
from edge.sources import Frame
from edge.tracker import IouTracker

PERSON = Detection("person", 0.9, (0.1, 0.1, 0.3, 0.2))
CLUTTER = Detection("person", 0.5, (0.6, 0.6, 0.7, 0.65))
T0 = 1_767_225_600.0  # 2026-01-01, at the start of a 60 s window


def _run(frames: list[list[Detection]], period: float = 0.2) -> tuple[IouTracker, float]:
    tracker = IouTracker()
    ts = 0.0
    for i, found in enumerate(frames):
        ts = i * period
        tracker.update(ts, found)
    return tracker, ts


def test_one_frame_clutter_is_not_counted_and_a_missed_person_still_is() -> None:
    tracker, ts = _run([[PERSON], [PERSON], [PERSON], [CLUTTER]])  # missed on the last frame, clutter there
    assert [d.box for d in occupants(tracker.tracks, ts)] == [PERSON.box]


def test_a_person_lost_longer_than_the_coast_is_gone() -> None:
    frames = [[PERSON], [PERSON]] + [[]] * (int(COAST_S / 0.2) + 1)
    tracker, ts = _run(frames)
    assert tracker.tracks  # the tracker still remembers them (1.5 s) ...
    assert occupants(tracker.tracks, ts) == []  # ... but they no longer count


def test_a_person_picked_up_again_by_a_new_track_counts_once() -> None:
    jumped = Detection("person", 0.9, (0.1, 0.165, 0.3, 0.265))  # IoU 0.21 < 0.25: a new track
    tracker, ts = _run([[PERSON], [PERSON], [PERSON], [jumped], [jumped]])
    assert len(tracker.tracks) == 2  # the old track coasting, the new one confirmed
    assert len(occupants(tracker.tracks, ts)) == 1
    # Without the overlap rule both would count (what the 0.3 guards against).
    assert len(occupants(tracker.tracks, ts, overlap=1.1)) == 2


HIDDEN = int(COAST_S / 0.2) + 1  # frames at 5 fps a person stays hidden: longer than the coast
BESIDE = Detection("person", 0.9, (0.1, 0.165, 0.3, 0.265))  # IoU 0.21 with PERSON: a new track, overlap 0.35


def test_a_person_back_from_an_occlusion_counts_from_the_first_frame() -> None:
    # Hidden longer than the coast (no longer counted), then found beside the last box seen: the
    # tracker starts a new track; it is that person back, not one-frame clutter (issue 18, frame 740).
    tracker, ts = _run([[PERSON], [PERSON]] + [[]] * HIDDEN + [[BESIDE]])
    assert tracker.tracks[0].last_ts < ts - COAST_S  # the old track, lost
    assert [t.box for t in tracker.tentative] == [BESIDE.box]  # the new one, not confirmed
    assert occupants(tracker.tracks, ts) == []  # confirmed tracks alone miss them
    assert [d.box for d in occupants(tracker.tracks, ts, tentative=tracker.tentative)] == [BESIDE.box]


def test_only_a_box_where_a_person_was_lost_counts_unconfirmed() -> None:
    # Clutter away from the lost track: still held back by confirmation.
    tracker, ts = _run([[PERSON], [PERSON]] + [[]] * HIDDEN + [[CLUTTER]])
    assert occupants(tracker.tracks, ts, tentative=tracker.tentative) == []
    # A small box inside the lost person's box (a head, a cone): not them.
    head = Detection("person", 0.9, (0.1, 0.12, 0.16, 0.16))
    tracker, ts = _run([[PERSON], [PERSON]] + [[]] * HIDDEN + [[head]])
    assert len(tracker.tentative) == 1
    assert occupants(tracker.tracks, ts, tentative=tracker.tentative) == []
    # Two new boxes on one lost person: one person back.
    twin = Detection("person", 0.9, (0.1, 0.035, 0.3, 0.135))
    tracker, ts = _run([[PERSON], [PERSON]] + [[]] * HIDDEN + [[BESIDE, twin]])
    assert len(tracker.tentative) == 2
    assert len(occupants(tracker.tracks, ts, tentative=tracker.tentative)) == 1
    # Still coasting (lost for less than the coast): the old track counts them, once.
    tracker, ts = _run([[PERSON], [PERSON], [], [BESIDE]])
    assert len(occupants(tracker.tracks, ts, tentative=tracker.tentative)) == 1
    # The lost person already picked up again by another track (confirmed now): a new box on the
    # other side of their last box is no one back.
    tracker, ts = _run([[PERSON], [PERSON]] + [[]] * HIDDEN + [[BESIDE], [BESIDE, twin]])
    assert len(tracker.tracks) == 2  # the lost one and the one that picked them up
    assert len(occupants(tracker.tracks, ts, tentative=tracker.tentative)) == 1


def test_other_classes_do_not_hide_a_lost_person() -> None:
    bike = Detection("bicycle", 0.9, PERSON.box)
    tracker, ts = _run([[PERSON, bike], [PERSON, bike], [bike]])
    assert sorted(d.label for d in occupants(tracker.tracks, ts)) == ["bicycle", "person"]


class _Script:
    """Boxes by frame number (the red value of the top-left pixel): the model's flicker, replayed."""

    model_ref = "script@1"

    def __init__(self, by_frame: dict[int, list[Detection]]) -> None:
        self.by_frame = by_frame

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        return self.by_frame.get(int(rgb[0, 0, 0]), [])


def _counts(pipeline: Pipeline) -> int:
    (event,) = [e for e in pipeline.anonymiser.flush() if e.zone == "all"]
    return int(event.mean_counts["person"] * 4 + 0.5)  # 4 frames: the mean times 4 is the total


def test_the_pipeline_counts_tracks_on_video_and_boxes_on_photos(tmp_path: Path) -> None:
    config = AgentConfig.model_validate({
        "site": "t", "device": "cam-1", "source": "x.avi", "outbox": tmp_path / "o.sqlite",
        "anonymisation": {"k": 1, "window_s": 60},
    })  # fmt: skip
    script = {0: [PERSON], 1: [PERSON], 2: [CLUTTER], 3: [PERSON]}
    frames = [np.full((60, 80, 3), i, np.uint8) for i in range(4)]

    video = Pipeline(config, _Script(script))
    for i, rgb in enumerate(frames):
        video.step(Frame(rgb, T0 + 0.2 * i))
    # Tracks: frame 0 not yet confirmed (0), 1 (1), 2 missed but coasting, clutter unconfirmed (1), 3 (1).
    assert _counts(video) == 3

    photos = Pipeline(config, _Script(script))
    for i, rgb in enumerate(frames):
        photos.step(Frame(rgb, T0 + 0.2 * i, still=True))
    assert _counts(photos) == 4  # every frame's own box, the clutter too
