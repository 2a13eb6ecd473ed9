"""`vigie sim` against a real broker and hub: every event the broker acknowledged is stored, once."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from hub.storage import SQLiteStore
from tests.conftest import cli
from vigie.broker import LocalBroker
from vigie.sim import SimOptions, run_fleet

pytestmark = pytest.mark.e2e


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
        assert result.events_acked >= 200 * 2  # at least one window per device and zone
        store = SQLiteStore(db)
        deadline = time.monotonic() + 30
        while store.count_events() < result.events_acked and time.monotonic() < deadline:
            time.sleep(0.3)
        stored = store.count_events()
        # Every acknowledged event is stored; one whose PUBACK was lost in the storm may be stored too.
        assert result.events_acked <= stored <= result.events_acked + result.events_failed
        assert len([d for d in store.list_devices() if d["site"] == "sim"]) == 200
    finally:
        ingest.send_signal(signal.SIGTERM)
        ingest.wait(timeout=20)
