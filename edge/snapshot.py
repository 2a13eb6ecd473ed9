"""Calibration snapshots for technicians: one frame with zones and lines drawn, faces blurred.

A snapshot never leaves the device: it is written to a local folder with
owner-only permissions and deleted after ``snapshot_ttl_s``. Faces are found
with BlazeFace on the upper body of each person box and on the whole frame,
and blurred with a margin; the upper body of every person box is blurred as
well, found face or not, so that a missed face, a face merged into another
person's box or a face leaning forward is never left sharp. Without the face
model a snapshot is refused (:func:`edge.face_model.locate_face_model` says
how to fetch it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge.config import AgentConfig
from edge.detectors import Detection
from edge.face_model import locate_face_model
from edge.faces import FaceDetector
from vigie.exceptions import ConfigError, ModelError

__all__ = ["blur_faces", "purge_snapshots", "save_snapshot", "upper_body"]

Box = tuple[float, float, float, float]


def upper_body(person: Box) -> Box:
    """The top ~half of a person box, widened and raised a little: where every head it holds can be.

    Blurred for every person box, found face or not. A box can hold several people (one walking
    behind another: vtest.avi frame 500 has a second face a third of the way down a box), and its
    shape does not tell: that merged box is as narrow as a single walker's. A person leaning forward
    puts the face ahead of the shoulders, which the widening covers.
    """
    ymin, xmin, ymax, xmax = person
    h, w = ymax - ymin, xmax - xmin
    return (
        max(0.0, ymin - 0.1 * h),
        max(0.0, xmin - 0.15 * w),
        min(1.0, ymin + 0.55 * h),
        min(1.0, xmax + 0.15 * w),
    )


def _pixels(box: Box, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    return (
        int(box[1] * w),
        int(box[0] * h),
        max(int(box[3] * w), int(box[1] * w) + 1),
        max(int(box[2] * h), int(box[0] * h) + 1),
    )


def _blur(img: npt.NDArray[np.uint8], box: Box) -> None:
    x0, y0, x1, y1 = _pixels(box, img.shape)
    region = img[y0:y1, x0:x1]
    if region.size:
        # Pixelate then blur: irreversible, unlike a light Gaussian. Blocks grow with the region
        # (an eighth of its smaller side, 12 px at least): fixed 12 px blocks left a face 200 px
        # tall as 16 blocks, which a face detector still found.
        block = max(12, min(region.shape[:2]) // 8)
        small = cv2.resize(
            region,
            (max(1, region.shape[1] // block), max(1, region.shape[0] // block)),
            interpolation=cv2.INTER_AREA,
        )
        smooth = cv2.resize(small, (region.shape[1], region.shape[0]))
        img[y0:y1, x0:x1] = cv2.GaussianBlur(smooth, (0, 0), max(3.0, block / 4))


def _faces_in(rgb: npt.NDArray[np.uint8], region: Box, faces: FaceDetector) -> list[Box]:
    """Faces found in a crop, in the whole frame's normalised coordinates."""
    x0, y0, x1, y1 = _pixels(region, rgb.shape)
    crop = rgb[y0:y1, x0:x1]
    if not crop.size:
        return []
    hh, ww = region[2] - region[0], region[3] - region[1]
    return [
        (
            region[0] + f.box[0] * hh,
            region[1] + f.box[1] * ww,
            region[0] + f.box[2] * hh,
            region[1] + f.box[3] * ww,
        )
        for f in faces.detect(np.ascontiguousarray(crop))
    ]


def blur_faces(
    rgb: npt.NDArray[np.uint8], people: Sequence[Detection], faces: FaceDetector
) -> tuple[npt.NDArray[np.uint8], list[Box]]:
    """A copy of the frame with every upper body and every face blurred; returns it and the blurred boxes.

    Faces are searched in each upper body (where they are big enough for the model) and in the
    whole frame (people the detector missed); each is blurred with a margin, since a face can reach
    past the region (a lean, a box cut short above the head).
    """
    regions = [upper_body(p.box) for p in people]
    found = [f for region in regions for f in _faces_in(rgb, region, faces)]
    found += [f.box for f in faces.detect(rgb)]
    blurred = regions + [_grow(f, 0.25) for f in found]
    out = rgb.copy()
    for box in blurred:
        _blur(out, box)
    return out, blurred


def _grow(box: Box, by: float) -> Box:
    ymin, xmin, ymax, xmax = box
    dh, dw = (ymax - ymin) * by, (xmax - xmin) * by
    return (max(0.0, ymin - dh), max(0.0, xmin - dw), min(1.0, ymax + dh), min(1.0, xmax + dw))


def _draw_overlay(img: npt.NDArray[np.uint8], config: AgentConfig) -> None:
    h, w = img.shape[:2]
    for zone in config.zones:
        pts = np.array([[int(x * w), int(y * h)] for x, y in zone.polygon], np.int32)
        cv2.polylines(img, [pts], True, (255, 200, 0), 2)
        # Label at the first vertex, not the centre: the centre is where people (and faces) are.
        x0, y0 = int(pts[0, 0]), int(pts[0, 1])
        cv2.putText(img, zone.name, (x0 + 6, y0 + 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 200, 0), 2)
    for line in config.lines:
        a = (int(line.a[0] * w), int(line.a[1] * h))
        b = (int(line.b[0] * w), int(line.b[1] * h))
        cv2.line(img, a, b, (0, 255, 255), 2)
        # An arrow from the middle, pointing forward (right of a→b in image coordinates).
        mx, my = (a[0] + b[0]) // 2, (a[1] + b[1]) // 2
        dx, dy = b[0] - a[0], b[1] - a[1]
        norm = max((dx * dx + dy * dy) ** 0.5, 1.0)
        tip = (int(mx - dy / norm * 40), int(my + dx / norm * 40))
        cv2.arrowedLine(img, (mx, my), tip, (0, 255, 255), 2, tipLength=0.3)
        label = f"{line.name} (forward)"
        (tw, _), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 2)
        # Write beyond the arrow's tip, on the side it points to, so the text never sits on the line.
        tx = tip[0] - tw - 6 if tip[0] < mx else tip[0] + 6
        cv2.putText(img, label, (tx, tip[1] + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 255), 2)


def purge_snapshots(folder: Path, ttl_s: float, now: float | None = None) -> int:
    """Delete snapshots older than ``ttl_s``; returns how many went."""
    now = time.time() if now is None else now
    removed = 0
    for path in folder.glob("snapshot-*.jpg"):
        try:
            if now - path.stat().st_mtime > ttl_s:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed


def save_snapshot(
    rgb: npt.NDArray[np.uint8],
    detections: Sequence[Detection],
    config: AgentConfig,
    *,
    face_model: Path | None = None,
) -> Path:
    """Blur, draw, write with mode 0600 under ``config.snapshot_dir``; purge expired ones first."""
    folder = config.snapshot_dir
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    purge_snapshots(folder, config.snapshot_ttl_s)
    if face_model is not None and not face_model.is_file():
        raise ModelError(
            f"--face-model {face_model} is not a file: pass the path of face_detection_full_range.tflite "
            "or run `vigie model fetch`"
        )
    faces = FaceDetector(face_model or locate_face_model(config.model_dir))
    people = [d for d in detections if d.label == "person"]
    image, _ = blur_faces(rgb, people, faces)
    _draw_overlay(image, config)
    name = f"snapshot-{config.device}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.jpg"
    path = folder / name
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ConfigError(f"could not encode the snapshot for {path}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.tobytes())
    return path
