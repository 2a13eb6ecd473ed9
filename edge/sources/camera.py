"""Live cameras through OpenCV: IP cameras (RTSP, HTTP/MJPEG) and USB/V4L2 devices.

A camera that fails, stalls or drops the connection is reopened with
exponential backoff; the agent keeps running and reports the gap in its
heartbeat rather than crashing. Frames are taken at most at ``fps_cap``;
frames in between are grabbed and discarded so that the analysed frame is
always the newest one, not a stale frame from the decoder's buffer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import cv2
import numpy as np

from edge.sources import Frame, redact_url

__all__ = ["StreamSource"]

log = logging.getLogger(__name__)


class StreamSource:
    """An RTSP/HTTP URL or a V4L2 device, reconnected with backoff when it fails or stalls."""

    def __init__(
        self,
        url: str,
        *,
        fps_cap: float | None = None,
        resolution: tuple[int, int] | None = None,
        stall_s: float = 5.0,
        backoff_max_s: float = 30.0,
        stop: threading.Event | None = None,
    ) -> None:
        self.url = url
        # What logs show: the URL without its password (secrets never go to logs).
        self.shown = redact_url(url)
        self.fps_cap = fps_cap
        self.resolution = resolution
        self.stall_s = stall_s
        self.backoff_max_s = backoff_max_s
        self.reconnects = 0
        #: Told ``(cause, retry_s)`` when the camera fails and ``(None, 0)`` when frames come back;
        #: the agent sets it (edge.troubles logs once, reports in the heartbeat and the status file).
        self.on_trouble: Callable[[str | None, float], None] | None = None
        self._troubled = False
        #: Set by the agent to its stop flag: a SIGTERM ends the retry wait of a dead camera.
        self.interrupt: threading.Event | None = None
        self._stop = stop or threading.Event()
        self._cap: cv2.VideoCapture | None = None

    def _open(self) -> cv2.VideoCapture:
        timeout_ms = int(self.stall_s * 1000)
        if self.url.startswith("/dev/video"):
            cap = cv2.VideoCapture(self.url, cv2.CAP_V4L2)
            if self.resolution:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.resolution[0])
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.resolution[1])
        else:
            # Open and read time-outs turn a silent stall into a failed read we can act on.
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
            cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        return cap

    def frames(self) -> Iterator[Frame]:
        backoff = 0.5
        period = 1.0 / self.fps_cap if self.fps_cap else 0.0
        next_at = 0.0
        while not self._stopping():
            if self._cap is None:
                self._cap = self._open()
                if not self._cap.isOpened():
                    self._cap.release()
                    self._cap = None
                    self._failed("camera unavailable", backoff)
                    self._pause(backoff)
                    backoff = min(backoff * 2, self.backoff_max_s)
                    continue
            now = time.monotonic()
            if now < next_at:
                # Not time yet: drain the decoder so the next analysed frame is fresh.
                ok = self._cap.grab()
                if ok:
                    continue
            else:
                ok, bgr = self._cap.read()
                if ok and bgr is not None:
                    backoff = 0.5
                    if self._troubled and self.on_trouble is not None:
                        self._troubled = False
                        self.on_trouble(None, 0.0)
                    next_at = max(next_at + period, now) if period else 0.0
                    yield Frame(np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8), time.time())
                    continue
            # A failed grab/read: the stream ended, dropped or stalled past the time-out.
            self._failed("camera stream lost", backoff)
            self._cap.release()
            self._cap = None
            self.reconnects += 1
            self._pause(backoff)
            backoff = min(backoff * 2, self.backoff_max_s)

    def _stopping(self) -> bool:
        return self._stop.is_set() or (self.interrupt is not None and self.interrupt.is_set())

    def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping() and (left := deadline - time.monotonic()) > 0:
            self._stop.wait(min(left, 0.25))

    def _failed(self, what: str, retry_s: float) -> None:
        if self.on_trouble is None:
            log.warning(f"{what}; retrying", extra={"source": self.shown, "retry_s": retry_s})
        else:
            self._troubled = True
            self.on_trouble(f"{what} ({self.shown}): cable, power or stream address?", retry_s)

    def close(self) -> None:
        self._stop.set()
        if self._cap is not None:
            self._cap.release()
            self._cap = None
