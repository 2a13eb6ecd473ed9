"""Issue 17, finding 4: after a hostile, oversized download the device's next attempt still succeeds.

A real HTTP server in a thread serves one target: first hostile (more bytes than the target has),
then honest (HTTP Range like the hub's static files). The fetcher must not keep a partial longer
than the target, and a partial that cannot be right must not wedge later downloads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tuf.api.exceptions import DownloadLengthMismatchError

try:  # the fetcher is moving to edge/ota/fetcher.py (issue 15)
    from edge.ota.fetcher import ResumableFetcher  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    from edge.ota_fetcher import ResumableFetcher  # type: ignore[no-redef,unused-ignore]

TARGET = os.urandom(200_000)
PATH = "/targets/0123abcd.model.tar.gz"


class Server:
    def __init__(self) -> None:
        self.hostile = True
        self.ranges: list[str | None] = []


def _handler(server_state: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            wanted = self.headers.get("Range")
            server_state.ranges.append(wanted)
            if server_state.hostile:  # ignores Range, sends the target and then much more
                body = TARGET + os.urandom(300_000)
                self._send(200, body)
                return
            start = int(wanted.removeprefix("bytes=").rstrip("-")) if wanted else 0
            if start >= len(TARGET) and wanted:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(TARGET)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            extra = {"Content-Range": f"bytes {start}-{len(TARGET) - 1}/{len(TARGET)}"} if wanted else {}
            self._send(206 if wanted else 200, TARGET[start:], extra)

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[Server, str]]:
    state = Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{httpd.server_address[1]}{PATH}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_hostile_oversized_download_does_not_wedge_the_next(
    server: tuple[Server, str], tmp_path: Path
) -> None:
    state, url = server
    fetcher = ResumableFetcher(tmp_path / "partial")
    with pytest.raises(DownloadLengthMismatchError):
        fetcher.download_bytes(url, len(TARGET))
    parts = list((tmp_path / "partial").glob("*.part"))
    assert all(p.stat().st_size <= len(TARGET) for p in parts)  # never longer than the target
    state.hostile = False
    assert fetcher.download_bytes(url, len(TARGET)) == TARGET
    assert fetcher.download_bytes(url, len(TARGET)) == TARGET  # and again, from the kept file


def test_a_partial_longer_than_the_file_is_discarded(server: tuple[Server, str], tmp_path: Path) -> None:
    """A partial left too long (by an older fetcher): the server's 416 says so; fetch it whole."""
    state, url = server
    state.hostile = False
    fetcher = ResumableFetcher(tmp_path / "partial")
    fetcher._part(url).write_bytes(TARGET + b"junk")
    assert fetcher.download_bytes(url, len(TARGET)) == TARGET
    assert state.ranges[0] == f"bytes={len(TARGET) + 4}-"
    assert state.ranges[1] is None  # the second request asked for the whole file


def test_an_honest_resume_still_resumes(server: tuple[Server, str], tmp_path: Path) -> None:
    state, url = server
    state.hostile = False
    fetcher = ResumableFetcher(tmp_path / "partial")
    fetcher._part(url).write_bytes(TARGET[:70_000])
    assert fetcher.download_bytes(url, len(TARGET)) == TARGET
    assert fetcher.resumed_from[url] == 70_000
    assert state.ranges == ["bytes=70000-"]
