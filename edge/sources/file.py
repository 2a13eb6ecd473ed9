"""Video files and image files as frame sources (replays, tests, the demo)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.sources import Frame
from vigie.exceptions import ConfigError

__all__ = ["ImageFilesSource", "VideoFileSource"]


def _rgb(bgr: Any) -> npt.NDArray[np.uint8]:
    # OpenCV decodes 8-bit BGR; asarray only re-labels the dtype for the type checker (no copy).
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)


class _Pacer:
    """Sleeps so that frames come no faster than a given rate."""

    def __init__(self, fps: float | None) -> None:
        self._period = 1.0 / fps if fps and fps > 0 else 0.0
        self._next = time.monotonic()

    def wait(self) -> None:
        if not self._period:
            return
        now = time.monotonic()
        if self._next > now:
            time.sleep(self._next - now)
        # Never try to catch up a backlog: a slow detector just lowers the rate.
        self._next = max(self._next, now) + self._period


class VideoFileSource:
    """Frames of a video file, optionally looped and paced at the file's own rate."""

    def __init__(
        self, path: Path, *, loop: bool = False, realtime: bool = False, fps_cap: float | None = None
    ) -> None:
        self.path = path
        self.loop = loop
        self._cap = cv2.VideoCapture(str(path))
        if not self._cap.isOpened():
            raise ConfigError(f"cannot open video {path}: not a video file OpenCV can decode")
        native = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        rate = native if realtime else None
        if fps_cap and (rate is None or fps_cap < rate):
            rate = fps_cap
        self._pacer = _Pacer(rate)
        # Frames to skip so that a capped rate still covers the footage at its real speed.
        self._stride = max(1, round(native / fps_cap)) if realtime and fps_cap and native else 1

    def frames(self) -> Iterator[Frame]:
        index = 0
        while True:
            ok, bgr = self._cap.read()
            if not ok:
                if not self.loop:
                    return
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, bgr = self._cap.read()
                if not ok:
                    return
            index += 1
            if (index - 1) % self._stride:
                continue
            self._pacer.wait()
            yield Frame(_rgb(bgr), time.time())

    def close(self) -> None:
        self._cap.release()


class ImageFilesSource:
    """A fixed list of images, read once each (or round and round with ``loop``)."""

    def __init__(self, paths: Sequence[Path], *, loop: bool = False, fps_cap: float | None = None) -> None:
        self.paths = list(paths)
        self.loop = loop
        self._pacer = _Pacer(fps_cap)

    def frames(self) -> Iterator[Frame]:
        while True:
            for path in self.paths:
                bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if bgr is None:
                    raise ConfigError(f"cannot read image {path}: not an image OpenCV can decode")
                self._pacer.wait()
                yield Frame(_rgb(bgr), time.time(), still=True)
            if not self.loop:
                return

    def close(self) -> None:
        """Nothing to release."""
