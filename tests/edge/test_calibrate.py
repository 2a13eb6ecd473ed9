"""Per-camera calibration: settings within the budget, a choice that does not chase noise, a careful edit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from edge.calibrate import THRESHOLDS, Setting, affordable, choose, set_camera_keys
from edge.evaluate import FrameResult, Report
from tests.conftest import SHARED, cli, need
from vigie.exceptions import ConfigError

SITE = """\
site: s   # the site
cameras:
  - device: cam-1
    profile: rpi5
    source: clip.avi
    tiles: 1              # kept comment
    thresholds:
      person: 0.4
      car: 0.5
    zones:
      - {name: left, polygon: [[0, 0], [0.5, 0], [0.5, 1]]}

  - {device: cam-2, profile: rpi5, source: clip.avi}
"""


def _report(errors: list[int]) -> Report:
    frames = tuple(FrameResult(i, {"all": 5}, {"all": 5 + e}, 1.0) for i, e in enumerate(errors))
    return Report("person", ("all",), frames)


def test_only_affordable_settings_are_tried() -> None:
    assert {s.tiles for s in affordable(5, 25, "rpi5")} == {1, 2}  # 3x3: 10 passes x 25 ms x 5 fps > 0.8 s
    assert {s.tiles for s in affordable(5, None, "x")} == {1, 2, 3}
    assert len(affordable(5, 9, "generic-x86")) == 18


def test_a_gain_smaller_than_one_person_does_not_buy_more_passes() -> None:
    cheap, dear, best = Setting(1, 0.4, False), Setting(2, 0.5, False), Setting(3, 0.5, True)
    # Over 4 frames one person is 0.25 of MAE: 3x3 (0.0) beats 1x1 (0.5) by more, 2x2 (0.25) by less.
    results = {cheap: _report([1, -1, 0, 0]), dear: _report([1, 0, 0, 0]), best: _report([0, 0, 0, 0])}
    assert choose(results)[0] == dear
    assert choose({cheap: _report([1, 0, 0, 0]), best: _report([0, 0, 0, 0])})[0] == cheap
    with pytest.raises(ConfigError, match="no setting fits"):
        choose({})


def test_the_site_file_is_edited_in_place() -> None:
    text = set_camera_keys(
        SITE, "cam-1", {"tiles": "2", "thresholds": "{person: 0.5, car: 0.5}", "letterbox": "true"}
    )
    assert "site: s   # the site" in text
    assert "    tiles: 2  # kept comment\n" in text
    assert "person: 0.4" not in text  # the old nested value is gone
    data = yaml.safe_load(text)
    cam = data["cameras"][0]
    assert cam["tiles"] == 2
    assert cam["thresholds"] == {"person": 0.5, "car": 0.5}
    assert cam["letterbox"] is True
    assert cam["zones"][0]["name"] == "left"
    assert data["cameras"][1] == {"device": "cam-2", "profile": "rpi5", "source": "clip.avi"}
    with pytest.raises(ConfigError, match=r"cam-2' is not a block-style entry.*tiles: 2"):
        set_camera_keys(SITE, "cam-2", {"tiles": "2"})


def test_calibrate_writes_the_camera_and_prints_the_expected_error(tmp_path: Path, model_dir: Path) -> None:
    labels_src = need(SHARED / "data" / "labels" / "vtest_people.csv")
    video = need(SHARED / "media" / "vtest.avi")
    labels = tmp_path / "counted.csv"
    labels.write_text("\n".join(labels_src.read_text().splitlines()[:5]) + "\n")  # 4 frames counted on site
    site = tmp_path / "site.yaml"
    site.write_text(SITE.replace("clip.avi", str(video)).replace("profile: rpi5", "profile: generic-x86"))
    result = subprocess.run(
        cli("model", "calibrate", "--config", str(site), "--device", "cam-1", "--labels", str(labels),
            "--video", str(video), "--model-dir", str(model_dir), "--write"),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "chosen for cam-1: tiles" in result.stdout
    assert "expected error on these 4 frames: MAE" in result.stdout
    cam = yaml.safe_load(site.read_text())["cameras"][0]
    assert cam["tiles"] in (1, 2, 3)
    assert cam["thresholds"]["car"] == 0.5  # other classes' thresholds are kept
    assert cam["thresholds"]["person"] in (0.4, 0.5, 0.6)
    assert "# kept comment" in site.read_text()


def test_a_tie_goes_to_the_model_manifests_threshold() -> None:
    from edge import model_store
    from edge.calibrate import DEFAULT_THRESHOLD

    assert model_store.load_manifest().class_scores["person"] == DEFAULT_THRESHOLD
    same = [0, 1, 0, 0]
    picked = choose({Setting(1, t, False): _report(same) for t in THRESHOLDS})[0]
    assert picked.threshold == DEFAULT_THRESHOLD
