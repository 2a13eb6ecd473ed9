"""Ingest at scale with real processes: shared subscriptions, a hub killed mid-batch, spoofed devices."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import paho.mqtt.client as mqtt
import pytest

from hub.storage import EventQuery
from tests.conftest import cli
from tests.test_wire import WINDOW, event
from vigie import wire
from vigie.broker import LocalBroker

pytestmark = pytest.mark.e2e


def store_url(store: Any) -> str:
    if store.backend == "sqlite":
        return str(store.path)
    return f"postgresql://127.0.0.1:5432/test?options={quote(f'-c search_path={store.schema}')}"


def publish_events(port: int, n: int, devices: int = 4, qos: int = 1) -> None:
    """n distinct events from `devices` devices, as fast as the broker takes them (≤100 in flight)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{os.getpid()}-{time.time_ns()}")
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", port)
    client.loop_start()
    pending = []
    for i in range(n):
        device = f"cam-{i % devices}"
        ts = WINDOW + 10 * (i // devices)
        e = event(site="load", device=device, id=wire.new_event_id(ts), window_start=ts, k=3,
                  counts={"person": 4}, mean_counts={"person": 2.5})  # fmt: skip
        pending.append(
            client.publish(wire.topic("load", device, wire.Channel.EVENT), wire.encode(e), qos=qos)
        )
        if len(pending) >= 100:
            for info in pending:
                info.wait_for_publish(10)
            pending.clear()
    for info in pending:
        info.wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def wait_count(store: Any, n: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    count = store.count_events()
    while count < n and time.monotonic() < deadline:
        time.sleep(0.3)
        count = store.count_events()
    return int(count)


def start_ingest(store: Any, broker: LocalBroker, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            cli("hub", "ingest", "--db", store_url(store), "--broker", f"127.0.0.1:{broker.port}", *extra),
            stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return proc


def wait_log(log: Path, text: str, times: int = 1, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count(text) >= times:
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} x{times} not in {log}:\n{log.read_text() if log.exists() else ''}")


def test_two_workers_share_the_stream_exactly_once(store: Any, broker: LocalBroker, tmp_path: Path) -> None:
    log = tmp_path / "ingest.log"
    proc = start_ingest(store, broker, log, "--workers", "2", "--group", "hub")
    try:
        wait_log(log, "ingest connected", times=2)
        time.sleep(0.5)  # both subscriptions registered
        publish_events(broker.port, 2000)
        assert wait_count(store, 2000) == 2000
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    received = [int(m) for m in re.findall(r"ingest stopped .*?received=(\d+)", log.read_text())]
    assert len(received) == 2
    assert sum(received) == 2000
    assert min(received) > 100  # the broker really split the stream between the two


def test_hub_killed_mid_batch_loses_nothing_and_duplicates_nothing(
    store: Any, broker: LocalBroker, tmp_path: Path
) -> None:
    log = tmp_path / "ingest.log"
    # Shared-subscription mode with one worker: MQTT 5 persistent session, acks after commit.
    proc = start_ingest(store, broker, log, "--workers", "1", "--worker-index", "0")
    wait_log(log, "ingest connected")
    publisher = threading.Thread(target=publish_events, args=(broker.port, 4000))
    publisher.start()
    deadline = time.monotonic() + 30
    while store.count_events() < 300 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # in the middle of the stream, batches in flight
    proc.wait()
    killed_at = store.count_events()
    publisher.join(timeout=120)
    assert killed_at < 4000, "the kill came too late to test anything"
    proc = start_ingest(store, broker, log, "--workers", "1", "--worker-index", "0")
    try:
        assert wait_count(store, 4000, timeout=90) == 4000
        time.sleep(1.0)
        assert store.count_events() == 4000  # and not one more
        rows, _ = store.list_events(EventQuery(limit=1000))
        assert len({r["id"] for r in rows}) == len(rows)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
