"""Frame sources: files, folders, a live HTTP/MJPEG camera served here (with a reconnect), V4L2, Pi camera."""

from __future__ import annotations

import glob
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.sources import open_source
from edge.sources.camera import StreamSource
from edge.sources.picamera import PiCameraSource
from vigie.exceptions import ConfigError
from vigie.netutil import free_port


def test_video_file(vtest_avi: Path) -> None:
    src = open_source(str(vtest_avi))
    frames = [f for _, f in zip(range(5), src.frames(), strict=False)]
    src.close()
    assert len(frames) == 5
    assert frames[0].rgb.shape == (576, 768, 3)
    assert frames[0].rgb.dtype == np.uint8


def test_video_loops_and_caps_the_rate(vtest_avi: Path) -> None:
    src = open_source(str(vtest_avi), loop=True, fps_cap=50)
    t0 = time.monotonic()
    n = sum(1 for _ in zip(range(26), src.frames(), strict=False))
    elapsed = time.monotonic() - t0
    src.close()
    assert n == 26
    assert elapsed >= 0.45  # 25 intervals at 50 fps


def test_image_folder(tmp_path: Path, bus_jpg: Path, zidane_jpg: Path) -> None:
    for p in (bus_jpg, zidane_jpg):
        (tmp_path / p.name).symlink_to(p)
    (tmp_path / "notes.txt").write_text("not an image")
    frames = list(open_source(str(tmp_path)).frames())
    assert [f.rgb.shape[:2] for f in frames] == [(1080, 810), (720, 1280)]


def test_unknown_sources_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        open_source(str(tmp_path / "missing.avi"))
    with pytest.raises(ConfigError, match="holds no images"):
        open_source(str(tmp_path))
    with pytest.raises(ConfigError, match="picamera2:N"):
        open_source("picamera2:front")


class _Mjpeg(BaseHTTPRequestHandler):
    """A camera that streams MJPEG over HTTP, like most IP cameras' /video.mjpg."""

    jpeg: bytes = b""
    stop: threading.Event

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        try:
            while not self.stop.is_set():
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n")
                self.wfile.write(f"Content-Length: {len(self.jpeg)}\r\n\r\n".encode() + self.jpeg + b"\r\n")
                time.sleep(0.04)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: Any) -> None:
        pass


def _serve(port: int, jpeg: bytes) -> ThreadingHTTPServer:
    handler = type("H", (_Mjpeg,), {"jpeg": jpeg, "stop": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.stop_streams = handler.stop  # type: ignore[attr-defined]
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def jpeg(bus_jpg: Path) -> bytes:
    img = cv2.resize(cv2.imread(str(bus_jpg)), (320, 240))
    return bytes(cv2.imencode(".jpg", img)[1])


def test_http_camera_reconnects_after_an_outage(jpeg: bytes) -> None:
    port = free_port()
    server = _serve(port, jpeg)
    src = StreamSource(f"http://127.0.0.1:{port}/video.mjpg", fps_cap=20, stall_s=2.0, backoff_max_s=1.0)
    frames: Iterator[Any] = src.frames()
    try:
        first = next(frames)
        assert first.rgb.shape == (240, 320, 3)
        server.shutdown()
        server.stop_streams.set()  # type: ignore[attr-defined]  # drop the live connection too
        server.server_close()
        # The camera goes away for a while, then comes back on the same address.
        threading.Timer(2.0, lambda: _serve(port, jpeg)).start()
        t0 = time.monotonic()
        # Frames already buffered may still come; then the loss, the reconnect, and fresh frames.
        while src.reconnects == 0 and time.monotonic() - t0 < 20:
            next(frames)
        again = next(frames)
        assert src.reconnects >= 1
        assert again.rgb.shape == (240, 320, 3)
        assert time.monotonic() - t0 < 25
    finally:
        src.close()


def test_v4l2_device() -> None:
    devices = sorted(glob.glob("/dev/video*"))
    if not devices:
        pytest.skip("no V4L2 device on this machine (/dev/video* absent): nothing to capture from")
    src = open_source(devices[0], fps_cap=5)
    frame = next(iter(src.frames()))
    src.close()
    assert frame.rgb.ndim == 3


class _FakePicamera2:
    """Stands in for picamera2.Picamera2 (no CSI camera here), same methods the source calls."""

    def __init__(self, index: int) -> None:
        self.index, self.calls = index, []  # type: ignore[var-annotated]

    def create_video_configuration(self, main: dict[str, Any]) -> dict[str, Any]:
        return {"main": main}

    def configure(self, config: dict[str, Any]) -> None:
        self.size = config["main"]["size"]

    def set_controls(self, controls: dict[str, Any]) -> None:
        self.controls = controls

    def start(self) -> None:
        self.calls.append("start")

    def capture_array(self, stream: str) -> np.ndarray:
        w, h = self.size
        frame = np.zeros((h, w, 3), np.uint8)
        frame[..., 0] = 255  # "RGB888" is B, G, R in memory
        return frame

    def stop(self) -> None:
        self.calls.append("stop")

    def close(self) -> None:
        self.calls.append("close")


def test_picamera2_source_through_its_interface() -> None:
    src = PiCameraSource(0, fps_cap=5, resolution=(640, 480), picamera2_class=_FakePicamera2)
    frame = next(iter(src.frames()))
    src.close()
    assert frame.rgb.shape == (480, 640, 3)
    assert frame.rgb[0, 0].tolist() == [0, 0, 255]  # blue, once BGR is turned into RGB
    assert src._cam.controls == {"FrameRate": 5.0}
    assert src._cam.calls == ["start", "stop", "close"]


def test_picamera2_missing_says_how_to_install() -> None:
    try:
        import picamera2  # noqa: F401

        pytest.skip("picamera2 is installed here")
    except ImportError:
        pass
    with pytest.raises(ConfigError, match="python3-picamera2"):
        open_source("picamera2")
