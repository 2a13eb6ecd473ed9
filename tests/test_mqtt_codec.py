"""The one MQTT codec: builders and parsers round-trip, framing refuses non-MQTT, a real broker agrees."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.broker_auth import write_password_file
from hub.mqtt_receiver import LeanSubscriber
from tests.conftest import need_service
from vigie import mqtt_codec as codec
from vigie.broker import find_mosquitto, start_broker
from vigie.mqtt import BrokerConfig
from vigie.mqtt_codec import MAX_PACKET_BYTES, MalformedPacketError, PacketType
from vigie.netutil import free_port

topics = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60)


def one(packet: bytes) -> tuple[int, bytes]:
    """Frame exactly one packet: (first byte, body)."""
    span = codec.next_frame(packet, 0)
    assert span is not None
    start, end = span
    assert end == len(packet), "one packet, nothing after it"
    return packet[0], packet[start:end]


@given(st.integers(0, 268_435_455))
def test_varint_round_trip(n: int) -> None:
    data = codec.encode_varint(n)
    assert 1 <= len(data) <= 4
    assert codec.read_varint(data + b"tail", 0) == (n, len(data))


def test_varint_longer_than_four_bytes_or_cut_short_is_malformed() -> None:
    with pytest.raises(MalformedPacketError, match="four bytes"):
        codec.read_varint(b"\xff\xff\xff\xff\x01", 0)
    with pytest.raises(MalformedPacketError, match="cut short"):
        codec.read_varint(b"\xff\xff", 0)


@given(
    topics,
    st.binary(max_size=300),
    st.sampled_from([0, 1]),
    st.integers(1, 65535),
    st.booleans(),
    st.booleans(),
)
def test_publish_round_trip(
    topic: str, payload: bytes, qos: int, packet_id: int, retain: bool, v5: bool
) -> None:
    packet = codec.publish(topic, payload, qos=qos, packet_id=packet_id, retain=retain, v5=v5)
    first, body = one(packet)
    assert first >> 4 == PacketType.PUBLISH
    assert first & 1 == int(retain)
    got = codec.parse_publish(first, body, 0, len(body), v5=v5)
    assert got == (topic, qos, packet_id if qos else 0, payload)


@given(topics, st.sampled_from([0, 1]), st.booleans())
def test_publish_cut_inside_its_fields_is_malformed(topic: str, qos: int, v5: bool) -> None:
    first, body = one(codec.publish(topic, b"", qos=qos, packet_id=7, v5=v5))
    for end in range(len(body)):  # the payload is empty: every cut loses a field
        with pytest.raises(MalformedPacketError):
            codec.parse_publish(first, body, 0, end, v5=v5)


def test_publish_with_qos_3_is_malformed_and_qos_2_is_not_built() -> None:
    with pytest.raises(MalformedPacketError, match="QoS 3"):
        codec.parse_publish(0x36, b"\x00\x01a\x00\x01", 0, 5)
    with pytest.raises(ValueError, match="QoS 2"):
        codec.publish("a", b"", qos=2)


@given(st.lists(st.integers(1, 65535), min_size=1, max_size=20))
def test_pubacks_round_trip(ids: list[int]) -> None:
    data, pos, got = codec.pubacks(ids), 0, []
    while (span := codec.next_frame(data, pos)) is not None:
        assert data[pos] >> 4 == PacketType.PUBACK
        got.append(codec.parse_packet_id(data, span[0]))
        pos = span[1]
    assert got == ids
    assert pos == len(data)
    assert codec.puback(ids[0]) == codec.pubacks(ids[:1])


@given(st.integers(1, 65535), st.lists(topics, min_size=1, max_size=4), st.booleans())
def test_subscribe_and_unsubscribe_layout(packet_id: int, filters: list[str], v5: bool) -> None:
    first, body = one(codec.subscribe(packet_id, filters, 1, v5=v5))
    assert first == 0x82  # SUBSCRIBE, reserved flags 0010
    assert codec.parse_packet_id(body) == packet_id
    pos = 3 if v5 else 2
    for f in filters:
        raw = f.encode()
        assert body[pos : pos + 2 + len(raw) + 1] == codec.encode_string(raw) + b"\x01"
        pos += 2 + len(raw) + 1
    assert pos == len(body)
    first, body = one(codec.unsubscribe(packet_id, filters, v5=v5))
    assert first == 0xA2
    assert body == packet_id.to_bytes(2, "big") + (b"\x00" if v5 else b"") + b"".join(
        codec.encode_string(f) for f in filters
    )


def test_suback_connack_and_disconnect() -> None:
    _, body = one(codec.frame(PacketType.SUBACK, b"\x00\x09\x03\x1f\x00\x00\x01\x80"))
    assert codec.parse_suback(body, v5=True) == (9, [1, 0x80])  # 3 property bytes skipped
    assert codec.parse_suback(b"\x00\x09\x01", v5=False) == (9, [1])
    with pytest.raises(MalformedPacketError):
        codec.parse_suback(b"\x00\x09\x09\x00", v5=True)
    assert codec.parse_connack(b"\x01\x00") == (True, 0)
    with pytest.raises(MalformedPacketError, match="CONNACK"):
        codec.parse_connack(b"\x00")
    assert codec.disconnect() == b"\xe0\x00"
    assert codec.disconnect(v5=True, session_expiry_s=0) == b"\xe0\x07\x00\x05\x11\x00\x00\x00\x00"
    assert codec.PINGREQ == b"\xc0\x00"


def test_next_frame_waits_for_a_whole_packet_and_refuses_oversize() -> None:
    packet = codec.publish("vigie/v1/s/d/event", b"x" * 200, qos=1, packet_id=3)
    for cut in range(len(packet)):
        assert codec.next_frame(packet[:cut], 0) is None
    assert codec.next_frame(packet + packet[:5], 0) == (3, len(packet))  # 200+ bytes: 2 length bytes
    with pytest.raises(MalformedPacketError, match="four bytes"):
        codec.next_frame(b"\x30\xff\xff\xff\xff\x01", 0)
    with pytest.raises(MalformedPacketError, match="exceeds"):
        codec.next_frame(b"\x30" + codec.encode_varint(MAX_PACKET_BYTES + 1), 0)


def _read(data: bytes) -> tuple[int, bytes]:
    async def go() -> tuple[int, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await codec.read_packet(reader)

    return asyncio.run(go())


def test_read_packet_round_trip_truncated_and_oversize() -> None:
    packet = codec.publish("t", b"p" * 500, qos=1, packet_id=2)
    assert _read(packet) == one(packet)
    with pytest.raises(asyncio.IncompleteReadError):
        _read(packet[:-1])
    with pytest.raises(MalformedPacketError, match="exceeds"):
        _read(b"\x30" + codec.encode_varint(MAX_PACKET_BYTES + 1))
    with pytest.raises(MalformedPacketError, match="four bytes"):
        _read(b"\x30\x80\x80\x80\x80\x01")


@given(st.data())
def test_receiver_parses_a_stream_cut_anywhere(data: st.DataObject) -> None:
    """The receiver's incremental parse: the same deliveries however the bytes arrive."""
    v5 = data.draw(st.booleans())
    sub = LeanSubscriber(BrokerConfig(port=1, protocol="5" if v5 else "3.1.1"), "t", ["#"], lambda b: [])
    sent = data.draw(st.lists(st.tuples(topics, st.binary(max_size=40)), min_size=1, max_size=8))
    stream = b"".join(
        codec.publish(t, p, qos=1, packet_id=i + 1, v5=v5) + codec.PINGREQ for i, (t, p) in enumerate(sent)
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    buf, batch = bytearray(), []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        buf += stream[a:b]
        batch, _ = sub._parse(buf, batch, 0.0, 1)
    assert not buf
    assert [(d.topic, d.payload, d.packet_id) for d in batch] == [
        (t, p, i + 1) for i, (t, p) in enumerate(sent)
    ]


# -- against a real broker ----------------------------------------------------------------------
async def _session(port: int, v5: bool, password: str) -> tuple[int, list[tuple[int, bytes]]]:
    """CONNECT with credentials, SUBSCRIBE, PUBLISH QoS 1 to ourselves: the packets the broker sends back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(codec.connect("codec-test", v5=v5, username="hub", password=password, clean=True))
        first, body = await asyncio.wait_for(codec.read_packet(reader), 5)
        assert first >> 4 == PacketType.CONNACK
        code = codec.parse_connack(body)[1]
        if code:
            return code, []
        writer.write(codec.subscribe(1, ["codec/#"], 1, v5=v5))
        writer.write(codec.publish("codec/x", b"hello", qos=1, packet_id=2, v5=v5))
        got = [await asyncio.wait_for(codec.read_packet(reader), 5) for _ in range(3)]
        writer.write(codec.PINGREQ + codec.disconnect(v5=v5, session_expiry_s=0 if v5 else None))
        await writer.drain()
        return code, got
    finally:
        writer.close()


@pytest.mark.parametrize("v5", [False, True], ids=["3.1.1", "5"])
def test_a_real_broker_understands_every_builder(tmp_path: Path, v5: bool) -> None:
    need_service(find_mosquitto() is not None, "mosquitto")
    write_password_file(tmp_path / "passwd", [("hub", "right")])
    broker = start_broker(tmp_path / "broker", free_port(), password_file=tmp_path / "passwd")
    try:
        refused, _ = asyncio.run(_session(broker.port, v5, "wrong"))
        assert refused in ((0x86, 0x87) if v5 else (4, 5))  # bad user name or password / not authorised
        code, got = asyncio.run(_session(broker.port, v5, "right"))
        assert code == 0
        kinds = {first >> 4: (first, body) for first, body in got}
        assert set(kinds) == {PacketType.SUBACK, PacketType.PUBACK, PacketType.PUBLISH}
        assert codec.parse_suback(kinds[PacketType.SUBACK][1], v5=v5) == (1, [1])
        assert codec.parse_packet_id(kinds[PacketType.PUBACK][1]) == 2
        first, body = kinds[PacketType.PUBLISH]
        topic, qos, _, payload = codec.parse_publish(first, body, 0, len(body), v5=v5)
        assert (topic, qos, payload) == ("codec/x", 1, b"hello")
    finally:
        broker.stop()


@given(st.binary(max_size=200), st.booleans())
def test_receiver_refuses_garbage_only_with_connection_errors(data: bytes, v5: bool) -> None:
    sub = LeanSubscriber(BrokerConfig(port=1, protocol="5" if v5 else "3.1.1"), "t", ["#"], lambda b: [])
    buf = bytearray(data)
    try:
        batch, _ = sub._parse(buf, [], 0.0, 1)
    except ConnectionError:  # MalformedPacketError, BrokerRefusedError, DISCONNECT
        return
    assert all(isinstance(d.payload, bytes) for d in batch)
