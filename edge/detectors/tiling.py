"""Tiling for dense scenes: the SSD returns at most 20 boxes a frame, so split the frame.

Each of the n×n overlapping tiles (plus, optionally, the whole frame for large
objects) goes through the detector; boxes are mapped back to frame
coordinates and merged with class-wise NMS.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge.detectors import Detection, Detector
from edge.detectors.decode import nms

__all__ = ["TiledDetector", "tile_windows"]


def tile_windows(n: int, overlap: float = 0.15) -> list[tuple[float, float, float, float]]:
    """Normalised (ymin, xmin, ymax, xmax) of n×n tiles that overlap by ``overlap`` of a tile."""
    size = 1.0 / (n - (n - 1) * overlap) if n > 1 else 1.0
    step = size * (1 - overlap)
    return [
        (r * step, c * step, min(1.0, r * step + size), min(1.0, c * step + size))
        for r in range(n)
        for c in range(n)
    ]


class TiledDetector:
    """Wraps a detector; same protocol."""

    def __init__(
        self, inner: Detector, n: int, *, include_full_frame: bool = True, iou_threshold: float = 0.5
    ):
        self.inner = inner
        self.model_ref = inner.model_ref
        self.windows = tile_windows(n)
        self.include_full_frame = include_full_frame
        self.iou_threshold = iou_threshold

    def detect(self, rgb: npt.NDArray[np.uint8]) -> list[Detection]:
        h, w = rgb.shape[:2]
        found: list[Detection] = []
        windows = list(self.windows)
        if self.include_full_frame:
            windows.append((0.0, 0.0, 1.0, 1.0))
        for ty0, tx0, ty1, tx1 in windows:
            crop = rgb[int(ty0 * h) : int(ty1 * h), int(tx0 * w) : int(tx1 * w)]
            th, tw = ty1 - ty0, tx1 - tx0
            for d in self.inner.detect(np.ascontiguousarray(crop)):
                ymin, xmin, ymax, xmax = d.box
                found.append(
                    Detection(
                        d.label, d.score, (ty0 + ymin * th, tx0 + xmin * tw, ty0 + ymax * th, tx0 + xmax * tw)
                    )
                )
        return nms(found, self.iou_threshold)
