"""Per-camera thresholds and letterboxing: from the site file to the detector the agent builds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.config import load_agent_config
from edge.detectors import Detection
from edge.detectors.factory import build_detector
from edge.detectors.litert import LiteRTDetector, letterbox, unletterbox


def test_letterbox_pads_and_maps_back() -> None:
    rgb = np.full((576, 768, 3), 200, np.uint8)
    padded, scale = letterbox(rgb)
    assert padded.shape == (768, 768, 3)
    assert padded[700, 10].tolist() == [0, 0, 0]  # padding below the frame
    assert scale == (768 / 576, 1.0)
    inside = Detection("person", 0.9, (0.3, 0.1, 0.6, 0.2))
    in_padding = Detection("person", 0.9, (0.8, 0.1, 0.9, 0.2))
    (back,) = unletterbox([inside, in_padding], scale)
    assert back.box == pytest.approx((0.4, 0.1, 0.8, 0.2))


def _site(tmp_path: Path, source: Path, camera_extra: str) -> Path:
    site = tmp_path / "site.yaml"
    site.write_text(
        "site: s\ncameras:\n  - device: cam-1\n    profile: generic-x86\n"
        f"    source: {source}\n{camera_extra}"
    )
    return site


def test_site_thresholds_and_letterbox_reach_the_detector(
    tmp_path: Path, model_dir: Path, bus_jpg: Path
) -> None:
    site = _site(tmp_path, bus_jpg, "    thresholds: {person: 0.7}\n    letterbox: true\n")
    config = load_agent_config(site, "cam-1", model_dir=model_dir)
    assert config.thresholds == {"person": 0.7}
    detector = build_detector(config)
    assert isinstance(detector, LiteRTDetector)
    assert detector.class_scores["person"] == 0.7
    assert detector.class_scores["car"] == 0.45  # the manifest's, where the site says nothing
    assert detector.letterboxed
    import cv2

    rgb = cv2.cvtColor(cv2.imread(str(bus_jpg)), cv2.COLOR_BGR2RGB)
    people = [d for d in detector.detect(rgb) if d.label == "person"]
    assert people
    assert all(d.score >= 0.7 for d in people)
