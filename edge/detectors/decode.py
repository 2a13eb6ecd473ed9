"""Output decoders (pure numpy): SSD with built-in post-processing, and raw YOLO tensors with NMS."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from edge.detectors import Detection

__all__ = ["decode_ssd", "decode_yolo", "nms"]


def decode_ssd(
    boxes: npt.NDArray[np.float32],
    classes: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    count: int,
    labels: Mapping[int, str],
    min_score: float,
    class_scores: Mapping[str, float],
) -> list[Detection]:
    """The four outputs of ``TFLite_Detection_PostProcess`` as detections above their class threshold."""
    found: list[Detection] = []
    for i in range(min(count, len(scores))):
        label = labels.get(int(classes[i]))
        score = float(scores[i])
        if label is None or score < class_scores.get(label, min_score):
            continue
        ymin, xmin, ymax, xmax = (min(max(float(v), 0.0), 1.0) for v in boxes[i])
        found.append(Detection(label, score, (ymin, xmin, ymax, xmax)))
    return found


def nms(detections: Sequence[Detection], iou_threshold: float = 0.45) -> list[Detection]:
    """Class-wise greedy non-maximum suppression, highest score first."""
    from edge.tracker import iou

    kept: list[Detection] = []
    for det in sorted(detections, key=lambda d: -d.score):
        if all(k.label != det.label or iou(k.box, det.box) < iou_threshold for k in kept):
            kept.append(det)
    return kept


def decode_yolo(
    output: npt.NDArray[np.float32],
    labels: Mapping[int, str],
    min_score: float,
    class_scores: Mapping[str, float],
    *,
    input_size: tuple[int, int],
    iou_threshold: float = 0.45,
    max_detections: int = 100,
) -> list[Detection]:
    """Raw YOLOv5/v8-style output, ``[1, 4 + C, N]`` or ``[1, N, 4 + C]`` (v8) or ``[.., 5 + C]`` (v5).

    Boxes are (cx, cy, w, h), in pixels of the model input or normalised;
    v5 adds an objectness column that multiplies the class scores.
    """
    out = np.asarray(output, dtype=np.float32)
    if out.ndim == 3:
        out = out[0]
    n_labels = max(labels) + 1 if labels else 0
    # Put predictions in rows: the long axis is the number of candidate boxes.
    if out.shape[0] < out.shape[1]:
        out = out.T
    width, height = input_size
    cols = out.shape[1]
    # YOLOv5 has an objectness column that multiplies the class scores; v8 has none.
    class_prob = out[:, 5:] * out[:, 4:5] if cols == 5 + n_labels else out[:, 4:]
    best = class_prob.argmax(axis=1)
    score = class_prob[np.arange(len(out)), best]
    keep = score >= min(min_score, *class_scores.values()) if class_scores else score >= min_score
    xywh = out[keep, :4]
    best, score = best[keep], score[keep]
    if len(xywh) and float(xywh.max()) > 2.0:  # pixel units
        xywh = np.divide(xywh, np.array([width, height, width, height], dtype=np.float32), dtype=np.float32)
    found: list[Detection] = []
    for (cx, cy, w, h), cls, s in zip(xywh, best, score, strict=True):
        label = labels.get(int(cls))
        if label is None or float(s) < class_scores.get(label, min_score):
            continue
        box = (
            float(np.clip(cy - h / 2, 0, 1)),
            float(np.clip(cx - w / 2, 0, 1)),
            float(np.clip(cy + h / 2, 0, 1)),
            float(np.clip(cx + w / 2, 0, 1)),
        )
        found.append(Detection(label, float(s), box))
    return nms(found, iou_threshold)[:max_detections]
