"""How the device downloads OTA files: resumable (HTTP Range) for targets, with a bandwidth cap.

Targets are stored under their hash on the hub (consistent snapshots), so a partial file
for a target URL can only ever be the beginning of that same file: the download resumes
from where it stopped (a cellular link drops, the power goes). Metadata URLs change
content over time and are always fetched whole. Whatever was resumed, ngclient verifies
the length and hash of the result; a bad partial fails that check and is thrown away.
A chunk is written to the partial only once the caller has accepted it (so never past the
length ngclient allows), and a partial longer than the file (the server's 416 says how long
the file is) is dropped and the file fetched whole: an oversized answer cannot wedge later
attempts (issue 17).
"""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tuf.api.exceptions import DownloadError, DownloadHTTPError
from tuf.ngclient.fetcher import FetcherInterface

__all__ = ["ResumableFetcher"]

CHUNK = 64 * 1024


class ResumableFetcher(FetcherInterface):
    """A ``FetcherInterface`` for ngclient: Range resume under ``partial_dir``, ``max_bytes_per_s`` cap."""

    def __init__(
        self, partial_dir: Path, *, max_bytes_per_s: float | None = None, timeout_s: float = 30
    ) -> None:
        self.partial_dir = partial_dir
        self.max_bytes_per_s = max_bytes_per_s
        self.timeout_s = timeout_s
        self.resumed_from: dict[str, int] = {}  # url -> bytes already on disk (for logs and tests)
        partial_dir.mkdir(parents=True, exist_ok=True)

    def _part(self, url: str) -> Path:
        return self.partial_dir / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".part")

    def discard(self) -> None:
        """Drop every partial download (after a verification failure, or a finished update)."""
        for part in self.partial_dir.glob("*.part"):
            part.unlink(missing_ok=True)

    def _fetch(self, url: str) -> Iterator[bytes]:
        resumable = "/targets/" in url
        part = self._part(url)
        have = part.stat().st_size if resumable and part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})  # noqa: S310
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout_s)  # noqa: S310
        except urllib.error.HTTPError as exc:
            total = exc.headers.get("Content-Range", "").rpartition("/")[2] if exc.headers else ""
            if exc.code == 416 and have and total == str(have):  # we hold the whole file already
                yield from self._replay(part)
                return
            if exc.code == 416 and have:
                # The partial is longer than the file (issue 17: it can never be right): drop it and
                # fetch the file whole, now, rather than fail every later attempt the same way.
                part.unlink(missing_ok=True)
                yield from self._fetch(url)
                return
            raise DownloadHTTPError(f"{url}: HTTP {exc.code}", exc.code) from None
        with response:
            if have and response.status == 206:
                self.resumed_from[url] = have
                yield from self._replay(part)
            else:
                have = 0
            expected = response.headers.get("Content-Length")
            started, sent = time.monotonic(), 0
            with part.open("ab" if have else "wb") if resumable else _NullFile() as sink:
                while chunk := response.read(CHUNK):
                    # Yield, then write (issue 17): the caller checks the length it allows (ngclient's
                    # max_length) and stops at a chunk too many, which so never reaches the partial.
                    yield chunk
                    sink.write(chunk)
                    sink.flush()
                    sent += len(chunk)
                    if self.max_bytes_per_s:
                        ahead = sent / self.max_bytes_per_s - (time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(ahead)
            if expected is not None and sent < int(expected):
                # A dropped link, not a bad file: keep the partial for the next attempt.
                raise DownloadError(f"{url}: connection dropped after {sent} of {expected} bytes")

    @staticmethod
    def _replay(part: Path) -> Iterator[bytes]:
        with part.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk


class _NullFile:
    def __enter__(self) -> _NullFile:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        return None
