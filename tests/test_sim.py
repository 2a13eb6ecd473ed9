"""`vigie sim` against a real broker and hub: every event produced is stored, once, and receipted."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hub.storage import SQLiteStore
from tests.conftest import cli
from vigie.broker import LocalBroker
from vigie.sim import MAX_RESEND_WAIT_S, SimOptions, Unreceipted, run_fleet


def test_unreceipted_events_are_sent_again_with_a_growing_wait_until_a_receipt() -> None:
    box = Unreceipted(resend_after_s=5.0)
    box.add("a", b"A")
    box.add("b", b"B")
    assert box.due(100.0) == [("a", b"A", False), ("b", b"B", False)]  # new: published at once
    assert box.acked("a", 100.0)
    assert box.acked("b", 100.0)
    assert not box.acked("a", 100.5)  # a second PUBACK for the same event counts once
    assert box.due(104.0) == []
    assert [i for i, _, overdue in box.due(105.5) if overdue] == ["a", "b"]  # no receipt in 5 s
    box.acked("a", 105.5)
    box.acked("b", 105.5)
    assert box.due(114.0) == []  # the wait doubled: 10 s now
    assert [i for i, _, _ in box.due(115.6)] == ["a", "b"]
    assert box.confirm(["a", "zzz"]) == 1  # the receipt: "a" goes, an unknown id is ignored
    assert len(box) == 1
    box.acked("b", 116.0)
    assert box.due(120.0) == []
    assert len(box.due(121.1)) == 1
    box.failed("b")  # the connection dropped before the PUBACK: at once on the next one
    assert box.due(121.2) == [("b", b"B", False)]
    assert box.confirm(["b"]) == 1
    assert len(box) == 0
    assert box.due(999.0) == []


def test_the_resend_wait_is_bounded() -> None:
    box = Unreceipted(resend_after_s=1.0)
    box.add("a", b"A")
    now = 0.0
    for _ in range(20):  # a hub down for a long time: the wait stops growing
        for event_id, _, _ in box.due(now):
            box.acked(event_id, now)
        now += 1000.0
    box.due(now)
    box.acked("a", now)
    assert box.due(now + MAX_RESEND_WAIT_S - 0.1) == []
    assert len(box.due(now + MAX_RESEND_WAIT_S)) == 1


@pytest.mark.e2e
def test_fleet_with_a_reconnect_storm_is_stored_exactly(broker: LocalBroker, tmp_path: Path) -> None:
    db = tmp_path / "hub.sqlite"
    SQLiteStore(db).close()
    log = tmp_path / "ingest.log"
    with log.open("wb") as fh:
        ingest = subprocess.Popen(
            cli("hub", "ingest", "--db", str(db), "--broker", f"127.0.0.1:{broker.port}"),
            stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        time.sleep(2)
        result = run_fleet(SimOptions(devices=200, duration_s=22, port=broker.port, window_s=10,
                                      heartbeat_s=5, storm_at_s=8, zones=2))  # fmt: skip
        assert result.connected == 200
        assert result.reconnects == 200  # the storm dropped everyone once
        assert result.events_produced >= 200 * 2  # at least one window per device and zone
        # The fleet waited for the hub's receipts: everything produced is stored, once.
        assert result.unreceipted == 0
        assert result.events_receipted == result.events_produced == len(result.event_ids)
        store = SQLiteStore(db)
        assert sorted(store.event_ids(site="sim")) == sorted(result.event_ids)
        assert result.events_acked <= result.events_produced
        assert len([d for d in store.list_devices() if d["site"] == "sim"]) == 200
    finally:
        ingest.send_signal(signal.SIGTERM)
        ingest.wait(timeout=20)


@pytest.mark.e2e
def test_without_a_hub_events_stay_unreceipted_unless_receipts_are_off(broker: LocalBroker) -> None:
    """A bare broker: no receipt comes, the fleet resends, then says so; without receipts PUBACK ends it."""
    opts = SimOptions(devices=3, duration_s=12, port=broker.port, window_s=10, heartbeat_s=5, zones=1,
                      resend_after_s=1.0, drain_s=3.0)  # fmt: skip
    waiting = run_fleet(opts)
    assert waiting.events_produced >= 3
    assert waiting.unreceipted == waiting.events_produced  # nothing receipted: all still held
    assert waiting.events_receipted == 0
    assert waiting.events_resent >= waiting.events_produced  # each sent again at least once
    assert waiting.elapsed_s >= opts.duration_s + opts.drain_s - 0.5  # it waited for the receipts
    bare = run_fleet(dataclasses.replace(opts, receipts=False))
    assert bare.events_produced >= 3
    assert bare.unreceipted == 0
    assert bare.events_resent == 0
    assert bare.events_acked == bare.events_produced
    assert bare.elapsed_s < opts.duration_s + 1.5  # no drain: the PUBACK was the end
