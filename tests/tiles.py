"""A raster tile server for the dashboard's tile-layer test: generated PNG tiles, every request recorded."""

from __future__ import annotations

import zlib
from http.server import BaseHTTPRequestHandler
from typing import ClassVar

__all__ = ["TileHandler", "png_tile"]


def png_tile(rgb: tuple[int, int, int], size: int = 256) -> bytes:
    """A plain PNG tile (grey with a darker border), written by hand: no imaging library needed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    rows = bytearray()
    for y in range(size):
        rows.append(0)
        for x in range(size):
            edge = x in (0, size - 1) or y in (0, size - 1)
            rows += bytes(c - 40 if edge else c for c in rgb)
    header = size.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows)))
        + chunk(b"IEND", b"")
    )


class TileHandler(BaseHTTPRequestHandler):
    requested: ClassVar[list[str]] = []
    tile = png_tile((236, 232, 224))

    def do_GET(self) -> None:
        type(self).requested.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.tile)))
        self.end_headers()
        self.wfile.write(self.tile)

    def log_message(self, *args: object) -> None:
        pass
