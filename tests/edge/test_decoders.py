"""Output decoders (SSD, YOLO v5/v8 with NMS), input dtypes, tiling, runtimes and delegates."""

from __future__ import annotations

import logging
import types
from pathlib import Path

import numpy as np
import pytest

from edge import model_store
from edge.detectors import Detection
from edge.detectors.decode import decode_yolo, nms
from edge.detectors.litert import (
    LiteRTDetector,
    load_edgetpu_delegate,
    load_interpreter_class,
    to_input_dtype,
)
from edge.detectors.tiling import TiledDetector, tile_windows
from vigie.exceptions import ModelError

LABELS = {0: "person", 1: "bicycle", 2: "car"}


def yolo_v8(rows: list[tuple[float, float, float, float, list[float]]], n: int = 50) -> np.ndarray:
    """[1, 4 + C, N] like Ultralytics' TFLite export, pixel units of a 640 input."""
    out = np.zeros((1, 4 + len(LABELS), n), np.float32)
    for i, (cx, cy, w, h, scores) in enumerate(rows):
        out[0, :4, i] = (cx, cy, w, h)
        out[0, 4:, i] = scores
    return out


def test_yolo_v8_decoding_with_nms() -> None:
    out = yolo_v8([
        (320, 320, 100, 200, [0.9, 0.0, 0.0]),
        (322, 318, 100, 200, [0.8, 0.0, 0.0]),  # the same person again: suppressed
        (100, 500, 80, 40, [0.0, 0.0, 0.7]),
        (500, 100, 20, 20, [0.1, 0.2, 0.0]),  # below threshold
    ])  # fmt: skip
    found = decode_yolo(out, LABELS, 0.4, {}, input_size=(640, 640))
    assert [(d.label, round(d.score, 2)) for d in found] == [("person", 0.9), ("car", 0.7)]
    ymin, xmin, ymax, xmax = found[0].box
    assert (xmin, ymin, xmax, ymax) == pytest.approx((270 / 640, 220 / 640, 370 / 640, 420 / 640))


def test_yolo_v8_transposed_and_normalised() -> None:
    out = yolo_v8([(0.5, 0.5, 0.2, 0.4, [0.0, 0.95, 0.0])]).transpose(0, 2, 1)  # [1, N, 4 + C]
    (d,) = decode_yolo(out, LABELS, 0.4, {}, input_size=(640, 640))
    assert d.label == "bicycle"
    assert d.box == pytest.approx((0.3, 0.4, 0.7, 0.6))


def test_yolo_v5_objectness_multiplies_scores() -> None:
    out = np.zeros((1, 30, 5 + len(LABELS)), np.float32)
    out[0, 0] = (0.5, 0.5, 0.1, 0.1, 0.9, 0.9, 0, 0)  # 0.81: kept
    out[0, 1] = (0.2, 0.2, 0.1, 0.1, 0.3, 0.9, 0, 0)  # 0.27: dropped
    found = decode_yolo(out, LABELS, 0.4, {}, input_size=(640, 640))
    assert [round(d.score, 2) for d in found] == [0.81]


def test_per_class_thresholds_apply_to_yolo() -> None:
    out = yolo_v8([(320, 320, 100, 100, [0.5, 0, 0]), (100, 100, 50, 50, [0, 0, 0.5])])
    found = decode_yolo(out, LABELS, 0.4, {"car": 0.6}, input_size=(640, 640))
    assert [d.label for d in found] == ["person"]


def test_nms_is_per_class() -> None:
    a = Detection("person", 0.9, (0, 0, 0.5, 0.5))
    b = Detection("person", 0.8, (0, 0, 0.5, 0.5))
    c = Detection("car", 0.7, (0, 0, 0.5, 0.5))
    assert nms([b, c, a]) == [a, c]


def test_input_dtypes() -> None:
    px = np.array([[[0, 128, 255]]], np.uint8)
    assert to_input_dtype(px, np.dtype(np.uint8), (0.0078125, 128)).tolist() == [[[0, 128, 255]]]
    assert to_input_dtype(px, np.dtype(np.int8), (0.0, 0)).tolist() == [[[-128, 0, 127]]]
    assert to_input_dtype(px, np.dtype(np.float32), (0.0, 0)).ravel().tolist() == pytest.approx(
        [0.0, 128 / 255, 1.0]
    )
    assert to_input_dtype(px, np.dtype(np.float32), (1 / 127.5, 127.5)).ravel().tolist() == pytest.approx(
        [-1.0, 0.5 / 127.5, 1.0]
    )


def test_tile_windows_cover_the_frame_with_overlap() -> None:
    wins = tile_windows(2, overlap=0.2)
    assert len(wins) == 4
    assert wins[0][:2] == (0, 0)
    assert wins[-1][2:] == pytest.approx((1.0, 1.0))
    assert wins[1][1] < wins[0][3]  # overlap between neighbours


class _Counting:
    """A detector that reports one person at the centre of whatever it is shown."""

    model_ref = "fake@1"

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        self.shapes.append(rgb.shape)
        return [Detection("person", 0.9, (0.4, 0.4, 0.6, 0.6))]


def test_tiled_detector_maps_boxes_back_to_the_frame() -> None:
    inner = _Counting()
    tiled = TiledDetector(inner, 2, include_full_frame=True)
    found = tiled.detect(np.zeros((400, 800, 3), np.uint8))
    assert len(inner.shapes) == 5  # four tiles and the whole frame
    centres = sorted(((d.box[1] + d.box[3]) / 2, (d.box[0] + d.box[2]) / 2) for d in found)
    assert len(found) == 5
    assert centres[0][0] < 0.3
    assert centres[-1][0] > 0.7


def test_tiling_finds_more_people_in_a_dense_scene(model_dir: Path, vtest_avi: Path) -> None:
    import cv2

    manifest = model_store.load_manifest()
    model, labels = model_store.locate(manifest, model_dir)
    plain = LiteRTDetector(model, model_store.read_labels(labels), model_ref=manifest.ref, min_score=0.4)
    cap = cv2.VideoCapture(str(vtest_avi))
    for _ in range(120):
        cap.read()
    _ok, bgr = cap.read()
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    people = len([d for d in plain.detect(rgb) if d.label == "person"])
    tiled = len([d for d in TiledDetector(plain, 2).detect(rgb) if d.label == "person"])
    assert tiled >= people


def test_runtime_choice_and_missing_runtime() -> None:
    _, name = load_interpreter_class("litert")
    assert name == "ai-edge-litert"
    try:
        import tflite_runtime  # noqa: F401

        pytest.skip("tflite-runtime is installed here")
    except ImportError:
        with pytest.raises(ModelError, match="pip install"):
            load_interpreter_class("tflite-runtime")


def test_edgetpu_delegate_absent_falls_back_to_cpu(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(lib: str) -> None:
        raise ValueError(f"Failed to load delegate from {lib}")

    with caplog.at_level(logging.WARNING):
        assert load_edgetpu_delegate(types.SimpleNamespace(load_delegate=refuse)) is None
    assert "libedgetpu is not installed" in caplog.text


def test_edgetpu_requested_on_a_machine_without_it_still_detects(model_dir: Path) -> None:
    manifest = model_store.load_manifest()
    model, labels = model_store.locate(manifest, model_dir)
    det = LiteRTDetector(model, model_store.read_labels(labels), model_ref=manifest.ref, delegate="edgetpu")
    assert det.runtime == "ai-edge-litert"  # no "+edgetpu": the CPU took over
    assert det.detect(np.zeros((300, 300, 3), np.uint8)) is not None
