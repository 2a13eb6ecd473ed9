"""SQLite store (idempotent writes, pagination, quarantine) and the pure ingest classifier."""

from __future__ import annotations

from pathlib import Path

import msgpack

from hub.ingest import classify
from hub.store import EventQuery, QuarantineRecord, SQLiteStore
from tests.test_wire import event
from vigie import wire

T = "vigie/v1/vieux-port/cam-01/event"


def test_insert_is_idempotent_on_event_id(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "hub.sqlite")
    e1, e2 = event(), event(zone="rue")
    assert store.add_events([e1, e2], 1.0) == 2
    assert store.add_events([e1], 2.0) == 0  # QoS 1 redelivery
    assert store.add_events([e1, e2, event()], 3.0) == 1
    rows, _ = store.list_events(EventQuery())
    assert len(rows) == 3
    assert len({r["id"] for r in rows}) == 3


def test_cursor_pagination_walks_every_event_once(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "hub.sqlite")
    store.add_events([event(zone=f"z{i}") for i in range(25)], 1.0)
    seen: list[str] = []
    cursor = None
    while True:
        rows, cursor = store.list_events(EventQuery(limit=10, cursor=cursor))
        seen += [r["zone"] for r in rows]
        if cursor is None:
            break
    assert sorted(seen) == sorted(f"z{i}" for i in range(25))
    assert seen[0] == "z24"  # newest first


def test_filters(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "hub.sqlite")
    store.add_events(
        [event(device="cam-01"), event(device="cam-02"), event(device="cam-02", zone="rue")], 1.0
    )
    rows, _ = store.list_events(EventQuery(device="cam-02", place="rue"))
    assert [(r["device"], r["zone"]) for r in rows] == [("cam-02", "rue")]
    rows, _ = store.list_events(EventQuery(since=1_700_000_050))
    assert rows == []


def test_data_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite"
    SQLiteStore(path).add_events([event()], 1.0)
    assert len(SQLiteStore(path).list_events(EventQuery())[0]) == 1


def test_classify_accepts_good_messages() -> None:
    e = event()
    assert classify(T, wire.encode(e), 0.0) == e


def test_classify_quarantines_with_field_and_reason() -> None:
    cases = {
        b"\xc1": ("<payload>", "not valid msgpack"),
        wire.encode(event())[:-4]: ("<payload>", "truncated"),
        msgpack.packb({"v": 9}): ("v", "unknown schema version"),
        b"\x00" * 10_000: ("<payload>", "exceeds"),
    }
    for payload, (field, words) in cases.items():
        result = classify(T, payload, 0.0)
        assert isinstance(result, QuarantineRecord)
        assert result.field == field
        assert words in result.reason
        assert (result.site, result.device) == ("vieux-port", "cam-01")


def test_classify_refuses_a_body_naming_another_device() -> None:
    spoof = wire.encode(event(device="cam-99"))
    result = classify(T, spoof, 0.0)
    assert isinstance(result, QuarantineRecord)
    assert result.field == "device"
    assert "cam-99" in result.reason


def test_classify_refuses_bad_topics() -> None:
    result = classify("somewhere/else", wire.encode(event()), 0.0)
    assert isinstance(result, QuarantineRecord)
    assert result.field == "<topic>"
    assert result.device is None


def test_quarantine_keeps_a_bounded_copy_and_counts_per_device(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "hub.sqlite")
    big = QuarantineRecord(T, "vieux-port", "cam-01", "<payload>", "exceeds", b"x" * 10_000, 1.0)
    store.quarantine([big, big])
    rows = store.list_quarantine()
    assert len(rows) == 2
    assert rows[0]["size"] == 10_000
    assert len(bytes.fromhex(rows[0]["payload_hex"])) == 1024
    (device,) = store.list_devices()
    assert device["quarantined"] == 2
