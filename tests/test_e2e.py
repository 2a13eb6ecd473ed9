"""End to end with real processes: Mosquitto, the hub under uvicorn, agent processes, HTTP."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import msgpack
import paho.mqtt.client as mqtt
import pytest

from edge.outbox import Outbox
from tests.conftest import Hub, cli
from tests.test_wire import event
from vigie import wire
from vigie.broker import LocalBroker, start_broker

pytestmark = pytest.mark.e2e


def run_agent(
    model_dir: Path, source: Path, broker_port: int, outbox: Path, device: str = "cam-1", *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli(
            "edge",
            "run",
            "--site",
            "test",
            "--device",
            device,
            "--source",
            str(source),
            "--model-dir",
            str(model_dir),
            "--broker",
            f"127.0.0.1:{broker_port}",
            "--outbox",
            str(outbox),
            *extra,
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def publisher(port: int) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-publisher")
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def test_bus_photo_reaches_the_rest_api(
    hub: Hub, broker: LocalBroker, model_dir: Path, bus_jpg: Path, tmp_path: Path
) -> None:
    # k = 3: the hub quarantines events counted with a k under its minimum (docs/privacy.md).
    proc = run_agent(model_dir, bus_jpg, broker.port, tmp_path / "outbox.sqlite", "cam-1", "--k", "3")
    assert proc.returncode == 0, proc.stderr
    body = hub.wait_for("/v1/events", lambda r: r["count"] >= 1)
    (ev,) = body["data"]
    assert ev["device"] == "cam-1"
    assert ev["zone"] == "all"
    assert ev["counts"]["person"] == "<5" or ev["counts"]["person"] >= 5  # the hub's floor (k = 5)
    assert ev["counts"]["bus"] == "<5"  # one bus, under the hub's k
    assert ev["model"] == "ssd-mobilenet-v2-coco-quant@1.0.0"
    devices = hub.wait_for("/v1/devices", lambda r: r["count"] == 1 and r["data"][0]["heartbeat"])
    beat = devices["data"][0]["heartbeat"]
    assert beat["inference_p50_ms"] > 0
    assert beat["rss_mb"] > 50
    assert beat["outbox_dropped"] == 0
    assert Outbox(tmp_path / "outbox.sqlite").depth() == 0


def test_malformed_messages_are_quarantined_and_counted(hub: Hub, broker: LocalBroker) -> None:
    topic = wire.topic("test", "cam-7", wire.Channel.EVENT)
    # Counted with k = 3, the hub's minimum: a smaller k would be quarantined too (docs/privacy.md).
    good = wire.encode(
        event(site="test", device="cam-7", k=3, counts={"person": 4}, mean_counts={"person": 2.5})
    )
    bad = {
        "garbage": b"\xc1\xc1",
        "truncated": good[:-5],
        "wrong version": msgpack.packb({**msgpack.unpackb(good), "v": 3}),
        "oversized": b"\x00" * (wire.MAX_PAYLOAD_BYTES + 100),
        "spoofed device": wire.encode(event(site="test", device="cam-8")),
    }
    c = publisher(broker.port)
    for payload in bad.values():
        c.publish(topic, payload, qos=1).wait_for_publish(5)
    c.publish(topic, good, qos=1).wait_for_publish(5)
    c.publish(topic, good, qos=1).wait_for_publish(5)  # a redelivery: stored once
    health = hub.wait_for("/healthz", lambda r: r["ingest"]["received"] >= 7)
    c.loop_stop()
    assert health["status"] == "ok"
    assert health["ingest"]["quarantined"] == 5
    assert health["ingest"]["stored"] == 1
    assert health["ingest"]["duplicates"] == 1
    q = hub.get("/v1/quarantine")
    assert q["total"] == 5
    reasons = " | ".join(f"{r['field']}: {r['reason']}" for r in q["data"])
    for words in ("not valid msgpack", "truncated", "unknown schema version 3", "exceeds", "device:"):
        assert words in reasons
    (device,) = [d for d in hub.get("/v1/devices")["data"] if d["device"] == "cam-7"]
    assert device["quarantined"] == 5
    assert hub.process.poll() is None
    assert hub.get("/v1/events")["count"] == 1


def test_broker_outage_is_absorbed_by_the_outbox(
    hub: Hub, broker: LocalBroker, model_dir: Path, bus_jpg: Path, tmp_path: Path
) -> None:
    port = broker.port
    workdir = broker.log_path.parent
    broker.stop()  # the hub keeps its persistent session in Mosquitto's persistence file
    outbox = tmp_path / "outbox.sqlite"
    agent = subprocess.Popen(
        cli(
            "edge",
            "run",
            "--site",
            "test",
            "--device",
            "cam-3",
            "--source",
            str(bus_jpg),
            "--model-dir",
            str(model_dir),
            "--broker",
            f"127.0.0.1:{port}",
            "--outbox",
            str(outbox),
            "--drain-timeout",
            "90",
            "--k",
            "3",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (outbox.exists() and Outbox(outbox).depth() == 1):
            time.sleep(0.2)
        assert Outbox(outbox).depth() == 1, "the event should wait in the outbox while the broker is down"
        assert hub.get("/v1/events")["count"] == 0
        restarted = start_broker(workdir, port)
        try:
            assert agent.wait(timeout=90) == 0, agent.stdout.read() if agent.stdout else ""
            body = hub.wait_for("/v1/events", lambda r: r["count"] == 1, timeout=60)
            assert body["data"][0]["device"] == "cam-3"
            assert Outbox(outbox).depth() == 0
        finally:
            restarted.stop()
    finally:
        if agent.poll() is None:
            agent.kill()
