"""`vigie model evaluate`: counting accuracy of the agent's own detector on hand-labelled frames."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from edge.detectors import Detection
from edge.evaluate import LabelledFrame, accuracy, evaluate, format_report, load_labels, zone_truth
from edge.zones import FULL_FRAME, Zone
from tests.conftest import SHARED, cli, need
from vigie.exceptions import ConfigError

LEFT = Zone(name="left", polygon=((0, 0), (0.5, 0), (0.5, 1), (0, 1)))


def test_accuracy_is_mae_bias_and_worst() -> None:
    acc = accuracy([(5, 5), (3, 5), (9, 6)])
    assert acc.n == 3
    assert acc.mae == pytest.approx(5 / 3)
    assert acc.bias == pytest.approx(1 / 3)
    assert acc.worst == 3


def test_zone_truth_from_foot_points() -> None:
    frame = LabelledFrame(7, 3, 0, ((10, 50), (300, 50), (700, 500)))
    assert zone_truth(frame, (768, 576), [FULL_FRAME, LEFT]) == {"all": 3, "left": 2}
    # Without foot points a zone has no truth, and the whole frame still has its count.
    assert zone_truth(LabelledFrame(7, 3), (768, 576), [FULL_FRAME, LEFT]) == {"all": 3}


def test_bad_labels_name_file_line_and_fix(tmp_path: Path) -> None:
    bad = tmp_path / "l.csv"
    bad.write_text('frame,count,uncertain,points\n1,2,0,"[[1,2]]"\n')
    with pytest.raises(ConfigError, match=r"l.csv: line 2: count is 2 but 1 foot points"):
        load_labels(bad)
    bad.write_text("frame,count\nten,2\n")
    with pytest.raises(ConfigError, match=r"line 2: .*expected columns frame,count"):
        load_labels(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_labels(tmp_path / "missing.csv")


class _Fixed:
    model_ref = "fixed@1"

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        # Two people on the left, a car and one person on the right.
        return [
            Detection("person", 0.9, (0.1, 0.1, 0.3, 0.2)),
            Detection("person", 0.9, (0.5, 0.3, 0.7, 0.4)),
            Detection("car", 0.9, (0.5, 0.6, 0.7, 0.9)),
            Detection("person", 0.9, (0.5, 0.7, 0.9, 0.8)),
        ]


def test_evaluate_counts_per_zone_like_the_agent() -> None:
    frames = {0: np.zeros((100, 200, 3), np.uint8), 5: np.zeros((100, 200, 3), np.uint8)}
    labels = [LabelledFrame(0, 3, 0, ((20, 30), (70, 70), (150, 90))), LabelledFrame(5, 5, 0, ((1, 1),) * 5)]
    report = evaluate(_Fixed(), frames, labels, [FULL_FRAME, LEFT], settings={"tiles": 1})
    assert [f.predicted for f in report.frames] == [{"all": 3, "left": 2}] * 2
    assert report.zone_accuracy("all").mae == pytest.approx(1.0)  # 0 then 2 under
    assert report.zone_accuracy("all").bias == pytest.approx(-1.0)
    assert report.zone_accuracy("left").mae == pytest.approx(1.5)  # 0 then 3 under
    text = format_report([report])
    assert "tiles=1" in text
    assert "left" in text


def test_cli_on_the_development_set(model_dir: Path) -> None:
    labels = need(SHARED / "data" / "labels" / "vtest_people.csv")
    video = need(SHARED / "media" / "vtest.avi")

    def rows(*extra: str) -> list[list[str]]:
        result = subprocess.run(
            cli("model", "evaluate", "--labels", str(labels), "--video", str(video),
                "--model-dir", str(model_dir), *extra),
            capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "ms/frame" in result.stdout
        return [line.split() for line in result.stdout.splitlines() if line.startswith("tiles=")]

    # The shipped default, counted as the agent counts video (1.5 s of tracking at 5 fps): issue 18's
    # target is MAE <= 0.5 people per frame; measured 0.33 (docs/models.md).
    (default,) = rows()
    assert default[:6] == ["tiles=1", "threshold=0.5", "letterbox=off", "horizon=9", "all", "12"]
    assert float(default[6]) <= 0.5
    # The same detector's raw boxes (what the agent counted before, and counts on a photo): 0.92 at
    # the old threshold 0.4, 1.00 at 0.5 — the tracking is what brings the error down.
    raw = rows("--horizon", "1", "--threshold", "0.4", "0.5")
    assert [r[:4] for r in raw] == [["tiles=1", "threshold=0.4", "letterbox=off", "all"],
                                    ["tiles=1", "threshold=0.5", "letterbox=off", "all"]]  # fmt: skip
    assert float(raw[0][5]) == pytest.approx(0.92, abs=0.1)
    assert float(raw[1][5]) >= float(default[6]) + 0.4


def test_cli_bad_video_is_one_clear_line(tmp_path: Path, model_dir: Path) -> None:
    labels = tmp_path / "l.csv"
    labels.write_text("frame,count\n1,2\n")
    result = subprocess.run(
        cli("model", "evaluate", "--labels", str(labels), "--video", str(tmp_path / "nope.avi"),
            "--model-dir", str(model_dir)),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "nope.avi not found" in result.stderr
    assert "Traceback" not in result.stderr


class _Flicker:
    """One person, standing still, that the detector misses on the labelled frame; clutter on one frame."""

    model_ref = "flicker@1"

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        index = int(rgb[0, 0, 0])
        person = [Detection("person", 0.9, (0.1, 0.1, 0.3, 0.2))] if index != 8 else []
        clutter = [Detection("person", 0.5, (0.6, 0.6, 0.7, 0.65))] if index == 8 else []
        return person + clutter


def test_a_horizon_counts_confirmed_tracks_not_raw_boxes() -> None:
    from edge.evaluate import Horizon

    frames = {i: np.full((100, 200, 3), i, np.uint8) for i in range(0, 9, 2)}
    labels = [LabelledFrame(8, 1)]
    raw = evaluate(_Flicker(), frames, labels)
    assert raw.frames[0].predicted == {"all": 1}  # the clutter, not the person
    horizon = Horizon(frames=5, stride=2, frame_period_s=0.2)
    assert horizon.indices(8) == [0, 2, 4, 6, 8]
    tracked = evaluate(_Flicker(), frames, labels, horizon=horizon)
    # The person's track was matched 0.2 s before: still counted; the one-frame clutter is not confirmed.
    assert tracked.frames[0].predicted == {"all": 1}
    assert tracked.zone_accuracy("all").mae == 0.0
    gone = evaluate(
        _Flicker(), frames, labels, horizon=Horizon(frames=5, stride=2, frame_period_s=0.2, coast_s=0.1)
    )
    assert gone.frames[0].predicted == {"all": 0}


def test_the_agent_horizon_covers_what_the_tracker_remembers() -> None:
    from edge.evaluate import agent_horizon

    # vtest.avi is 10 fps, the agent analyses 5: every 2nd frame, 1.5 s back (a track lives 1.5 s unmatched).
    horizon = agent_horizon(10.0, 5.0)
    assert (horizon.stride, horizon.frames) == (2, 9)
    assert horizon.indices(100) == list(range(84, 101, 2))
    assert agent_horizon(25.0, 25.0).frames == 39


def test_tiling_is_never_worse_than_no_tiling_on_the_development_set(model_dir: Path) -> None:
    """Issue 18: tiles exist to find what the whole frame cannot resolve; they must not add people.

    The evaluation tool's own pipeline (build_detector, the agent's tracker over 1.5 s at 5 fps)
    at the default person threshold 0.5, stretched frames; measured 0.33 / 0.33 / 0.33 tracked
    and 1.00 / 0.67 / 0.58 from raw boxes for tiles 1 / 2 / 3 (docs/models.md).
    """
    from edge.config import AgentConfig
    from edge.detectors.factory import build_detector
    from edge.evaluate import agent_horizon, read_frames

    labels = load_labels(need(SHARED / "data" / "labels" / "vtest_people.csv"))
    video = need(SHARED / "media" / "vtest.avi")
    horizon = agent_horizon(10.0, 5.0)
    frames = read_frames(video, [i for lab in labels for i in horizon.indices(lab.index)])
    base = AgentConfig(site="evaluate", device="evaluate", source=str(video), model_dir=model_dir, threads=2)
    tracked: dict[int, float] = {}
    raw: dict[int, float] = {}
    for tiles in (1, 2, 3):
        detector = build_detector(base.model_copy(update={"tiles": tiles}))
        tracked[tiles] = evaluate(detector, frames, labels, horizon=horizon).zone_accuracy("all").mae
        raw[tiles] = evaluate(detector, frames, labels).zone_accuracy("all").mae
    assert tracked[1] <= 0.5  # the shipped default (issue 18's target)
    assert raw[2] <= raw[1]
    assert raw[3] <= raw[1]
    assert tracked[2] <= tracked[1]
    # On frame 740 a man occluded for 0.8 s reappears in a tile on the labelled frame itself: a new
    # track, not confirmed yet, that counts because it lies where his confirmed track was lost
    # (edge.occupancy.reappeared); before that rule 3x3 tiles miscounted him (0.42).
    assert tracked[3] <= tracked[1]
