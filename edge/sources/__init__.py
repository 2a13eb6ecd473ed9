"""Frame sources behind one small protocol.

A source yields :class:`Frame` objects (RGB pixels and a capture time).
Pixels stay in the agent's memory; nothing here writes or sends them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from vigie.exceptions import ConfigError

__all__ = ["Frame", "FrameSource", "open_source", "redact_url"]


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured image, RGB, H x W x 3 uint8, with its UTC capture time."""

    rgb: npt.NDArray[np.uint8]
    ts: float
    still: bool = False
    """A photo with no frames around it (an image file): counted from its own boxes, not from tracks."""


class FrameSource(Protocol):
    """Iterate frames until the source ends (a file) or forever (a camera)."""

    def frames(self) -> Iterator[Frame]:
        """Yield frames in capture order."""
        ...

    def close(self) -> None:
        """Release the device or file."""
        ...


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


def open_source(
    spec: str,
    *,
    loop: bool = False,
    realtime: bool = False,
    fps_cap: float | None = None,
    resolution: tuple[int, int] | None = None,
) -> FrameSource:
    """Open a source from its spec.

    ``rtsp://…``, ``http(s)://…`` and ``/dev/videoN`` are live cameras (reconnected
    with backoff), ``picamera2:N`` is the Pi camera, a folder is a set of images,
    anything else a video or image file.

    Raises:
        ConfigError: when the spec names nothing usable, with what to give instead.
    """
    if spec.startswith(("rtsp://", "rtsps://", "http://", "https://", "/dev/video")):
        from edge.sources.camera import StreamSource

        # Credentials stay out of the site file: `rtsp://${VIGIE_RTSP_USER}:${VIGIE_RTSP_PASSWORD}@…`
        # is filled from the environment (/etc/vigie/camera.env under systemd).
        return StreamSource(os.path.expandvars(spec), fps_cap=fps_cap, resolution=resolution)
    if spec.startswith("picamera2"):
        from edge.sources.picamera import PiCameraSource

        index = spec.partition(":")[2] or "0"
        if not index.isdigit():
            raise ConfigError(f"source {spec!r}: use picamera2 or picamera2:N (N the camera number)")
        return PiCameraSource(int(index), fps_cap=fps_cap, resolution=resolution or (1280, 720))

    from edge.sources.file import ImageFilesSource, VideoFileSource

    path = Path(spec)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise ConfigError(f"source folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return ImageFilesSource(images, loop=loop, fps_cap=fps_cap)
    if not path.is_file():
        raise ConfigError(
            f"source {spec!r} does not exist: give a video file, an image, a folder of images, "
            "rtsp://…, http(s)://…, /dev/videoN or picamera2"
        )
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFilesSource([path], loop=loop, fps_cap=fps_cap)
    return VideoFileSource(path, loop=loop, realtime=realtime, fps_cap=fps_cap)


def redact_url(url: str) -> str:
    """``rtsp://user:secret@host/…`` → ``rtsp://user:***@host/…``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
