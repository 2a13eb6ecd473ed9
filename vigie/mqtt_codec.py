"""MQTT wire encoding shared by the hub's lean receiver and the fleet simulator (pure functions)."""

from __future__ import annotations

import struct

__all__ = ["encode_string", "encode_varint", "read_varint"]


def encode_varint(n: int) -> bytes:
    """MQTT's variable byte integer (remaining lengths, property lengths)."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def encode_string(s: str | bytes) -> bytes:
    """A length-prefixed UTF-8 string (or binary data)."""
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def read_varint(data: bytes | bytearray, pos: int) -> tuple[int, int]:
    """Decode a variable byte integer at ``pos``; returns (value, position after it)."""
    value, shift = 0, 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos
