"""The Raspberry Pi camera through picamera2 (the `pi` extra), imported only when used."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from edge.sources import Frame
from vigie.exceptions import ConfigError

__all__ = ["PiCameraSource"]


class PiCameraSource:
    """Frames from a CSI camera (Camera Module 2/3, HQ) via libcamera."""

    def __init__(
        self,
        index: int = 0,
        *,
        fps_cap: float | None = None,
        resolution: tuple[int, int] = (1280, 720),
        picamera2_class: Any = None,
    ) -> None:
        if picamera2_class is None:
            try:
                from picamera2 import Picamera2
            except ImportError:
                raise ConfigError(
                    "source picamera2: the picamera2 package is missing; on Raspberry Pi OS run "
                    "`sudo apt install python3-picamera2` or `pip install 'vigie[edge,pi]'`"
                ) from None
            picamera2_class = Picamera2
        self._cam = picamera2_class(index)
        config = self._cam.create_video_configuration(main={"size": tuple(resolution), "format": "RGB888"})
        self._cam.configure(config)
        if fps_cap:
            self._cam.set_controls({"FrameRate": float(fps_cap)})
        self._started = False

    def frames(self) -> Iterator[Frame]:
        if not self._started:
            self._cam.start()
            self._started = True
        while True:
            # picamera2's "RGB888" is BGR in memory order; flip to RGB.
            array = self._cam.capture_array("main")
            yield Frame(np.ascontiguousarray(array[..., 2::-1], dtype=np.uint8), time.time())

    def close(self) -> None:
        if self._started:
            self._cam.stop()
        self._cam.close()
