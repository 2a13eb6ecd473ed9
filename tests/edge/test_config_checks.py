"""`vigie config validate` catches what a technician gets wrong: classes, sources, budget; one line each."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from edge.checks import budget_problems, class_problems, detector_passes, source_problems
from tests.conftest import cli

COCO = frozenset({"person", "bicycle", "car", "motorcycle", "bus", "truck"})


def _validate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli("config", "validate", *args), capture_output=True, text=True, timeout=60, check=False
    )


def test_unknown_class_names_are_named_with_a_suggestion() -> None:
    problems = class_problems(
        "cam-1", ["person", "bike", "pedestrian", "persn", "zebra crossing"], COCO, "classes"
    )
    assert len(problems) == 4
    assert "cameras[cam-1].classes: 'bike' is not a class of the model" in problems[0]
    assert "did you mean 'bicycle'?" in problems[0]
    assert "did you mean 'person'?" in problems[1]
    assert "did you mean 'person'?" in problems[2]
    assert "did you mean" not in problems[3]
    assert class_problems("c", ["person", "bus"], COCO, "classes") == []


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("missing.avi", "'missing.avi' does not exist"),
        ("/usr/share/doc/opencv-doc/examples/data/nope.avi", "install the Debian package opencv-doc"),
        ("rtsp://", "has no host"),
        ("http://cam:99999/s", "port that is not a number"),
        ("ftp://cam/s", "scheme 'ftp' is not supported"),
    ],
)
def test_bad_sources_are_named(tmp_path: Path, source: str, words: str) -> None:
    (problem,) = source_problems("cam-1", source, tmp_path)
    assert problem.startswith("cameras[cam-1].source: ")
    assert words in problem


@pytest.mark.parametrize(
    "source",
    [
        "clip.avi",
        "rtsp://${VIGIE_RTSP_USER}:${VIGIE_RTSP_PASSWORD}@10.0.0.5:554/s",
        "/dev/video0",
        "picamera2:1",
    ],
)
def test_good_sources_pass(tmp_path: Path, source: str) -> None:
    (tmp_path / "clip.avi").write_bytes(b"x")
    assert source_problems("cam-1", source, tmp_path) == []


def test_tiling_times_fps_against_the_profile_budget() -> None:
    assert detector_passes(1) == 1
    assert detector_passes(4) == 17
    (problem,) = budget_problems("cam-1", tiles=4, fps=30, profile="rpi5", inference_ms=25)
    assert "17 detector passes" in problem
    assert "12.8 s of compute per second" in problem
    assert "lower fps_cap to 1.9" in problem
    assert budget_problems("cam-1", tiles=1, fps=5, profile="rpi5", inference_ms=25) == []
    assert budget_problems("cam-1", tiles=4, fps=30, profile="x", inference_ms=None) == []


def test_validate_reports_each_problem_once(tmp_path: Path, model_dir: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        "site: s\ncameras:\n"
        "  - {device: cam-1, profile: rpi5, source: gone.avi, classes: [person, bike],\n"
        "     tiles: 4, fps_cap: 30}\n"
        "  - {device: cam-2, profile: generic-x86, source: 'rtsp://'}\n"
    )
    result = _validate("--model-dir", str(model_dir), str(site))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 4, result.stdout
    assert all(line.startswith(f"invalid {site}: cameras[cam-") for line in lines)
    assert "'bike' is not a class" in lines[0]
    assert "'gone.avi' does not exist" in lines[1]
    assert "4x4 tiles at 30 fps" in lines[2]
    assert "'rtsp://' has no host" in lines[3]
    assert "Traceback" not in result.stderr


def test_a_schema_error_is_one_line_without_the_spurious_cameras_line(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        "site: s\ncameras:\n  - {device: cam-1, profile: rpi5, source: x.avi, tile: 2}\n"
        "  - {device: cam-2, profile: rpi5, source: x.avi, thresholds: {person: 1.5}}\n"
    )
    result = _validate(str(site))
    assert result.returncode == 1
    assert f"invalid {site}: 2 error(s)" in result.stdout
    assert "cameras.0.tile: Extra inputs are not permitted" in result.stdout
    assert "cameras.1.thresholds.person: Input should be less than 1" in result.stdout
    assert "at least 1 item" not in result.stdout
