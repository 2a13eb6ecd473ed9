"""Wire protocol v1: round trips, and a clear error for every kind of bad payload."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigie import wire
from vigie.exceptions import WireError

WINDOW = 1_700_000_040


def event(**overrides: Any) -> wire.ZoneCountEvent:
    fields: dict[str, Any] = {
        "site": "vieux-port",
        "device": "cam-01",
        "zone": "quai",
        "id": wire.new_event_id(WINDOW),
        "window_start": WINDOW,
        "window_s": 10,
        "frames": 50,
        "counts": {"person": 4, "bus": 1},
        "mean_counts": {"person": 2.5, "bus": 0.2},
        "model": "ssd-mobilenet-v2-coco-quant@1.0.0",
        "k": 1,
    }
    fields.update(overrides)
    return wire.ZoneCountEvent(**fields)


def person_event(site: str, device: str, zone: str) -> wire.ZoneCountEvent:
    """Four people in one window, counted with the hub's minimum k (3): an event the hub stores."""
    return event(site=site, device=device, zone=zone, k=3, counts={"person": 4}, mean_counts={"person": 2.5})


def raw_event(**overrides: Any) -> bytes:
    body = msgpack.unpackb(wire.encode(event()))
    body.update(overrides)
    return bytes(msgpack.packb(body))


def test_event_round_trip() -> None:
    e = event()
    assert wire.decode(wire.encode(e), wire.Channel.EVENT) == e


def test_heartbeat_and_status_round_trip() -> None:
    hb = wire.Heartbeat(
        site="s",
        device="d",
        ts=WINDOW,
        agent_version="0.1.0",
        model="m@1",
        uptime_s=5,
        fps=4.5,
        inference_p50_ms=17.0,
        inference_p95_ms=19.5,
        cpu_percent=42.0,
        rss_mb=180.2,
        disk_free_mb=5000.0,
        cpu_temp_c=None,
        outbox_depth=0,
        outbox_dropped=0,
    )
    st_ = wire.Status(site="s", device="d", ts=WINDOW, state="online")
    assert wire.decode(wire.encode(hb), wire.Channel.HEARTBEAT) == hb
    assert wire.decode(wire.encode(st_), wire.Channel.STATUS) == st_


def test_event_id_is_uuid7_carrying_only_the_window_start() -> None:
    ids = {wire.new_event_id(WINDOW) for _ in range(1000)}
    assert len(ids) == 1000
    for value in list(ids)[:20]:
        parsed = uuid.UUID(value)
        assert parsed.version == 7
        assert parsed.int >> 80 == WINDOW * 1000


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        (raw_event(v=3), "v", "unknown schema version 3"),
        (raw_event(v="1"), "v", "unknown schema version"),
        (raw_event(kind="selfie"), "kind", "unknown message kind"),
        (raw_event(frames="50"), "frames", "valid integer"),
        (raw_event(counts={"person": -1}), "counts.person", "greater than or equal"),
        (raw_event(counts={"Person!": 1}), "counts.Person!", "pattern"),
        (raw_event(bbox=[0.1, 0.2, 0.3, 0.4]), "bbox", "extra fields are refused"),
        (raw_event(track_id=17), "track_id", "extra fields are refused"),
        (raw_event(jpeg=b"\xff\xd8\xff\xe0"), "jpeg", "extra fields are refused"),
        (raw_event(window_start=WINDOW + 3), "window_start", "not a multiple"),
        (raw_event(window_s=7), "window_s", "not one of"),
        (raw_event(id=str(uuid.uuid4())), "id", "UUIDv7"),
        (raw_event(id=wire.new_event_id(WINDOW + 10)), "id", "time part"),
        (raw_event(device="cam/01"), "device", "pattern"),
        (raw_event(window_start=12), "window_start", "greater than or equal"),
    ],
)
def test_bad_fields_are_named(payload: bytes, field: str, words: str) -> None:
    with pytest.raises(WireError) as info:
        wire.decode(payload)
    assert info.value.field == field
    assert words in info.value.reason


def test_missing_field_is_named() -> None:
    body = msgpack.unpackb(wire.encode(event()))
    del body["zone"]
    with pytest.raises(WireError) as info:
        wire.decode(msgpack.packb(body))
    assert info.value.field == "zone"
    assert "required" in info.value.reason.lower()


def test_truncated_payload() -> None:
    good = wire.encode(event())
    for cut in (1, len(good) // 2, len(good) - 1):
        with pytest.raises(WireError) as info:
            wire.decode(good[:cut])
        assert info.value.field == "<payload>"
        assert "truncated" in info.value.reason


def test_oversized_payload_is_refused_before_unpacking() -> None:
    with pytest.raises(WireError) as info:
        wire.decode(b"\x00" * (wire.MAX_PAYLOAD_BYTES + 1))
    assert "exceeds" in info.value.reason


def test_encode_refuses_oversized_messages() -> None:
    # The largest legal event (80 classes of 32-letter names) must fit the payload cap.
    counts = {"x" * 30 + chr(97 + i // 26) + chr(97 + i % 26): 10_000 for i in range(80)}
    big = event(counts=counts, mean_counts={k: 9999.99 for k in counts})
    assert len(wire.encode(big)) < wire.MAX_PAYLOAD_BYTES
    with pytest.raises(ValueError, match="at most 80"):
        event(counts={**counts, "zz": 1}, mean_counts={})


def test_not_msgpack_and_not_a_map() -> None:
    with pytest.raises(WireError, match="not valid msgpack"):
        wire.decode(b"\xc1\xc1\xc1")
    with pytest.raises(WireError, match="expected a map"):
        wire.decode(msgpack.packb([1, 2, 3]))
    with pytest.raises(WireError, match="trailing bytes"):
        wire.decode(wire.encode(event()) + b"\x00")


def test_deep_nesting_is_refused() -> None:
    # 6,000 nested one-element arrays: small on the wire, deadly for a naive recursive decoder.
    head = b"\x83" + b"".join(msgpack.packb(x) for x in ("v", 1, "kind", "zone_count", "x"))
    payload = head + b"\x91" * 6000 + b"\x01"
    assert len(payload) < wire.MAX_PAYLOAD_BYTES
    with pytest.raises(WireError):
        wire.decode(payload)


def test_kind_must_match_channel() -> None:
    with pytest.raises(WireError) as info:
        wire.decode(wire.encode(event()), wire.Channel.HEARTBEAT)
    assert info.value.field == "kind"


def test_topics() -> None:
    t = wire.topic("vieux-port", "cam-01", wire.Channel.EVENT)
    assert t == "vigie/v1/vieux-port/cam-01/event"
    assert wire.parse_topic(t) == wire.TopicParts("vieux-port", "cam-01", wire.Channel.EVENT)
    assert wire.subscription(wire.Channel.EVENT, "hub") == "$share/hub/vigie/v1/+/+/event"
    for bad in (
        "vigie/v2/a/b/event",
        "vigie/v1/a/b",
        "vigie/v1/a/b/selfie",
        "vigie/v1/A/b/event",
        "vigie/v1/a/b/event/x",
    ):
        with pytest.raises(WireError) as info:
            wire.parse_topic(bad)
        assert info.value.field == "<topic>"
    with pytest.raises(WireError, match="slug"):
        wire.topic("a/b", "c", wire.Channel.EVENT)
    with pytest.raises(WireError, match="slug"):
        wire.topic("a", "#", wire.Channel.EVENT)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    with contextlib.suppress(WireError):
        wire.decode(data)


_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
_values = st.recursive(
    _leaf,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "v",
                "kind",
                "id",
                "site",
                "device",
                "zone",
                "counts",
                "window_s",
                "window_start",
                "frames",
                "mean_counts",
                "model",
                "ts",
                "x",
            ]
        ),
        _values,
        max_size=12,
    )
)
def test_random_maps_never_crash_the_decoder(body: dict[str, Any]) -> None:
    with contextlib.suppress(WireError):
        wire.decode(msgpack.packb(body, use_bin_type=True))


def test_suppressed_counts_must_say_under_k() -> None:
    e = event(k=3, counts={"person": 4, "bus": "<3"}, mean_counts={"person": 2.5})
    assert wire.decode(wire.encode(e)) == e
    with pytest.raises(WireError) as info:
        wire.decode(raw_event(k=3, counts={"person": 4, "bus": 1}, mean_counts={}))
    assert info.value.field == "counts.bus"
    assert "under k=3" in info.value.reason
    with pytest.raises(WireError) as info:
        wire.decode(raw_event(k=3, counts={"bus": "<5"}, mean_counts={}))
    assert info.value.field == "counts.bus"
    # A mean for a suppressed class would undo the suppression.
    with pytest.raises(WireError) as info:
        wire.decode(raw_event(k=3, counts={"bus": "<3"}, mean_counts={"bus": 0.4}))
    assert info.value.field == "mean_counts"


def test_line_count_and_alert_round_trip() -> None:
    line = wire.LineCountEvent(
        site="s", device="d", id=wire.new_event_id(WINDOW), line="door", window_start=WINDOW, window_s=10,
        forward={"person": 7}, backward={"person": "<2"}, k=2, model="m@1",
    )  # fmt: skip
    alert = wire.Alert(
        site="s", device="d", id=wire.new_event_id(WINDOW), rule="wrong_way", line="door", ts=WINDOW,
        value=1.0, threshold=1.0, model="m@1",
    )  # fmt: skip
    for msg in (line, alert):
        assert wire.decode(wire.encode(msg), wire.Channel.EVENT) == msg


def test_alert_time_is_coarsened_and_names_one_place() -> None:
    body = dict(site="s", device="d", rule="intrusion", zone="quai", value=4.0, threshold=3.0, model="m@1")
    with pytest.raises(ValueError, match="coarsened"):
        wire.Alert(id=wire.new_event_id(WINDOW + 3), ts=WINDOW + 3, **body)
    with pytest.raises(ValueError, match="exactly one"):
        wire.Alert(id=wire.new_event_id(WINDOW), ts=WINDOW, line="door", **body)
    with pytest.raises(ValueError, match="rule"):
        wire.Alert(id=wire.new_event_id(WINDOW), ts=WINDOW, **{**body, "rule": "face_match"})


def test_receipt_round_trip_chunking_and_peek_id() -> None:
    from hub.ingest import receipts

    ids = [wire.new_event_id(WINDOW) for _ in range(wire.RECEIPT_MAX_IDS + 10)]
    out = receipts({("vieux-port", "cam-01"): ids}, WINDOW)
    assert [t for t, _ in out] == ["vigie/v1/vieux-port/cam-01/receipt"] * 2  # 150 + 10
    decoded = [wire.decode(p, wire.Channel.RECEIPT) for _, p in out]
    assert [i for r in decoded for i in r.ids] == ids  # type: ignore[union-attr]
    assert all(len(p) <= wire.MAX_PAYLOAD_BYTES for _, p in out)
    # An event id can be read from a message that fails validation (it is receipted too) ...
    bad = msgpack.packb({**msgpack.unpackb(wire.encode(event())), "frames": "many"})
    assert wire.peek_id(bad) == msgpack.unpackb(bad)["id"]
    # ... but never from garbage.
    for junk in (b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"id": "x" * 36}), b"\x00" * 9000):
        assert wire.peek_id(junk) is None
    # A receipt is refused on another channel, and carries nothing but ids.
    with pytest.raises(WireError):
        wire.decode(out[0][1], wire.Channel.EVENT)
