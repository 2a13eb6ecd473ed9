"""The one MQTT codec (3.1.1 and 5): packet types, framing, builders and parsers (pure, no I/O).

Used by the hub's lean receiver (:mod:`hub.mqtt_receiver`) and the fleet
simulator (:mod:`vigie.sim`). Only what they need is here: CONNECT, SUBSCRIBE,
UNSUBSCRIBE, PUBLISH (QoS 0/1), PUBACK, PINGREQ, DISCONNECT out; CONNACK,
SUBACK, PUBLISH and PUBACK in. Every byte read from the network goes through
:func:`next_frame` or :func:`read_packet`, which refuse a remaining length of
more than four bytes or of more than :data:`MAX_PACKET_BYTES` with
:class:`MalformedPacketError`; the parsers refuse a packet shorter than its
own fields the same way.

The receiver parses tens of thousands of packets a second: :func:`next_frame`
and :func:`parse_publish` work on offsets into one receive buffer instead of
copying each packet out of it.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable, Sequence
from enum import IntEnum, IntFlag

__all__ = [
    "MAX_PACKET_BYTES",
    "PINGREQ",
    "ConnectFlag",
    "MalformedPacketError",
    "PacketType",
    "connect",
    "disconnect",
    "encode_string",
    "encode_varint",
    "frame",
    "next_frame",
    "parse_connack",
    "parse_packet_id",
    "parse_publish",
    "parse_suback",
    "puback",
    "pubacks",
    "publish",
    "read_packet",
    "read_varint",
    "subscribe",
    "unsubscribe",
]

#: Largest packet accepted from the broker (the broker's own limit for devices is 16 KiB).
MAX_PACKET_BYTES = 1 << 18


class PacketType(IntEnum):
    """The control packet type: the high four bits of a packet's first byte."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


class ConnectFlag(IntFlag):
    """CONNECT's flags byte."""

    CLEAN = 0x02  # clean session (3.1.1) / clean start (5)
    WILL = 0x04
    WILL_QOS1 = 0x08
    WILL_RETAIN = 0x20
    PASSWORD = 0x40
    USERNAME = 0x80


class MalformedPacketError(ConnectionError):
    """The peer sent bytes that are not MQTT: the connection is dropped and made again."""


#: PINGREQ has no body.
PINGREQ = bytes([PacketType.PINGREQ << 4, 0])
_PUBACK_HEAD = bytes([PacketType.PUBACK << 4, 2])
_SESSION_EXPIRY = 0x11  # MQTT 5 property identifier
_U16 = struct.Struct("!H")


# -- primitives -------------------------------------------------------------------------------
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
    return _U16.pack(len(b)) + b


def read_varint(data: bytes | bytearray, pos: int, end: int | None = None) -> tuple[int, int]:
    """Decode a variable byte integer at ``pos``; returns (value, position after it).

    Raises:
        MalformedPacketError: it runs past ``end`` (default: the data's end) or past four bytes.
    """
    end = len(data) if end is None else end
    value = 0
    for shift in (0, 7, 14, 21):
        if pos >= end:
            raise MalformedPacketError("variable byte integer cut short")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
    raise MalformedPacketError("variable byte integer longer than four bytes")


def frame(kind: PacketType, body: bytes, flags: int = 0) -> bytes:
    """One packet: first byte (type and flags), remaining length, body."""
    return bytes([kind << 4 | flags]) + encode_varint(len(body)) + body


def _check_length(length: int) -> None:
    if length > MAX_PACKET_BYTES:
        raise MalformedPacketError(f"a {length}-byte packet exceeds {MAX_PACKET_BYTES} bytes")


# -- framing ------------------------------------------------------------------------------------
def next_frame(buf: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """Where the body of the packet starting at ``buf[pos]`` lies: (start, end), or None if incomplete.

    The packet's first byte is ``buf[pos]``; the next packet starts at ``end``.

    Raises:
        MalformedPacketError: a remaining length over four bytes or over MAX_PACKET_BYTES.
    """
    n = len(buf)
    i = pos + 1
    if i < n and buf[i] < 0x80:  # fast path: a one-byte remaining length (acks, pings, short publishes)
        end = i + 1 + buf[i]
        return None if end > n else (i + 1, end)
    length = 0
    for shift in (0, 7, 14, 21):
        if i >= n:
            return None  # remaining length not complete yet
        b = buf[i]
        i += 1
        length |= (b & 0x7F) << shift
        if not b & 0x80:
            break
    else:
        raise MalformedPacketError("remaining length longer than four bytes")
    _check_length(length)
    end = i + length
    return None if end > n else (i, end)


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one whole packet: (first byte, body).

    Raises:
        MalformedPacketError: as :func:`next_frame`.
        asyncio.IncompleteReadError: the connection closed mid-packet.
    """
    head = bytearray(await reader.readexactly(2))
    while head[-1] & 0x80 and len(head) < 5:  # the remaining length goes on
        head += await reader.readexactly(1)
    length = read_varint(head, 1)[0]  # five bytes and still going: malformed
    _check_length(length)
    return head[0], (await reader.readexactly(length) if length else b"")


# -- builders -----------------------------------------------------------------------------------
def _expiry_properties(session_expiry_s: int | None) -> bytes:
    """An MQTT 5 property list holding only the Session Expiry Interval (or nothing)."""
    if session_expiry_s is None:
        return b"\x00"
    props = bytes([_SESSION_EXPIRY]) + struct.pack("!I", session_expiry_s)
    return encode_varint(len(props)) + props


def connect(
    client_id: str,
    *,
    v5: bool = False,
    keepalive: int = 60,
    clean: bool = True,
    username: str | None = None,
    password: str | None = None,
    will: tuple[str, bytes] | None = None,
    session_expiry_s: int | None = None,
) -> bytes:
    """CONNECT. ``will`` is sent with QoS 1, retained; ``session_expiry_s`` only with MQTT 5."""
    flags = ConnectFlag.CLEAN if clean else ConnectFlag(0)
    payload = encode_string(client_id)
    if will is not None:
        flags |= ConnectFlag.WILL | ConnectFlag.WILL_QOS1 | ConnectFlag.WILL_RETAIN
        payload += (b"\x00" if v5 else b"") + encode_string(will[0]) + encode_string(will[1])
    if username:
        flags |= ConnectFlag.USERNAME
        payload += encode_string(username)
        if password is not None:
            flags |= ConnectFlag.PASSWORD
            payload += encode_string(password)
    var = encode_string("MQTT") + bytes([5 if v5 else 4, flags]) + _U16.pack(keepalive)
    if v5:
        var += _expiry_properties(session_expiry_s)
    return frame(PacketType.CONNECT, var + payload)


def subscribe(packet_id: int, filters: Iterable[str], qos: int = 1, *, v5: bool = False) -> bytes:
    """SUBSCRIBE to every filter with the same maximum QoS."""
    body = _U16.pack(packet_id) + (b"\x00" if v5 else b"")
    body += b"".join(encode_string(f) + bytes([qos]) for f in filters)
    return frame(PacketType.SUBSCRIBE, body, 0x02)


def unsubscribe(packet_id: int, filters: Iterable[str], *, v5: bool = False) -> bytes:
    """UNSUBSCRIBE from every filter."""
    body = _U16.pack(packet_id) + (b"\x00" if v5 else b"") + b"".join(encode_string(f) for f in filters)
    return frame(PacketType.UNSUBSCRIBE, body, 0x02)


def publish(
    topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 0, retain: bool = False, v5: bool = False
) -> bytes:
    """PUBLISH with QoS 0 or 1 (``packet_id`` only with QoS 1); MQTT 5 adds an empty property list."""
    if qos not in (0, 1):
        raise ValueError(f"QoS {qos}: this codec publishes with QoS 0 or 1")
    var = encode_string(topic) + (_U16.pack(packet_id) if qos else b"") + (b"\x00" if v5 else b"")
    return frame(PacketType.PUBLISH, var + payload, qos << 1 | int(retain))


def puback(packet_id: int) -> bytes:
    """PUBACK (success; MQTT 5 allows this short form)."""
    return _PUBACK_HEAD + _U16.pack(packet_id)


def disconnect(*, v5: bool = False, session_expiry_s: int | None = None) -> bytes:
    """DISCONNECT; with MQTT 5 and ``session_expiry_s``, the session's new expiry (0 ends it)."""
    if not (v5 and session_expiry_s is not None):
        return frame(PacketType.DISCONNECT, b"")
    return frame(PacketType.DISCONNECT, b"\x00" + _expiry_properties(session_expiry_s))


# -- parsers ------------------------------------------------------------------------------------
def parse_connack(body: bytes) -> tuple[bool, int]:
    """(session present, return/reason code) from a CONNACK's body."""
    if len(body) < 2:
        raise MalformedPacketError(f"CONNACK of {len(body)} bytes (at least 2)")
    return bool(body[0] & 1), body[1]


def parse_packet_id(body: bytes | bytearray, start: int = 0) -> int:
    """The packet id that opens PUBACK, SUBACK, UNSUBACK."""
    if len(body) - start < 2:
        raise MalformedPacketError("packet shorter than its packet id")
    return (body[start] << 8) | body[start + 1]


def parse_suback(body: bytes, *, v5: bool = False) -> tuple[int, list[int]]:
    """(packet id, one return code per filter) from a SUBACK's body; a code >= 0x80 is a refusal."""
    packet_id = parse_packet_id(body)
    pos = 2
    if v5 and len(body) > 2:
        plen, pos = read_varint(body, 2)
        pos += plen
        if pos > len(body):
            raise MalformedPacketError("SUBACK shorter than its properties")
    return packet_id, list(body[pos:])


def parse_publish(
    first: int, buf: bytes | bytearray, start: int, end: int, v5: bool = False
) -> tuple[str, int, int, bytes]:
    """(topic, QoS, packet id (0 with QoS 0), payload) of the PUBLISH whose body is ``buf[start:end]``.

    Raises:
        MalformedPacketError: QoS 3, or a body shorter than its own fields.
    """
    qos = (first >> 1) & 0x03
    if qos == 3 or end - start < 2:
        raise MalformedPacketError(f"PUBLISH with QoS {qos} or no topic length")
    p = start + 2 + ((buf[start] << 8) | buf[start + 1])
    if p > end:
        raise MalformedPacketError("PUBLISH shorter than its topic")
    topic = buf[start + 2 : p].decode("utf-8", "replace")
    packet_id = 0
    if qos:
        if p + 2 > end:
            raise MalformedPacketError("PUBLISH shorter than its topic and packet id")
        packet_id = (buf[p] << 8) | buf[p + 1]
        p += 2
    if v5:
        plen, p = read_varint(buf, p, end)
        p += plen
        if p > end:
            raise MalformedPacketError("PUBLISH shorter than its properties")
    return topic, qos, packet_id, bytes(buf[p:end])


def pubacks(packet_ids: Sequence[int]) -> bytes:
    """Several PUBACKs in one write."""
    return b"".join(_PUBACK_HEAD + _U16.pack(i) for i in packet_ids)
