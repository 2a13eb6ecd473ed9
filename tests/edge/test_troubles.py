"""Agents that explain themselves: a dead broker is logged once with its cause and next retry,
reported in the heartbeat once it can be sent, and shown by ``vigie edge status``."""

from __future__ import annotations

import logging
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from edge.link import MqttLink
from edge.outbox import Outbox
from edge.status import format_status, read_status, status_path
from edge.troubles import Troubles, explain_connect_error
from tests.conftest import cli
from vigie import wire
from vigie.broker import LocalBroker, find_mosquitto, start_broker
from vigie.exceptions import VigieError, WireError
from vigie.mqtt import BrokerConfig
from vigie.netutil import free_port


def test_connect_errors_are_explained_in_words() -> None:
    assert explain_connect_error(ConnectionRefusedError(111, "refused"), "hub", 8883) == (
        "broker",
        "nothing accepts connections at hub:8883 (connection refused): is the broker running?",
    )
    kind, cause = explain_connect_error(socket.gaierror(-2, "Name or service not known"), "hub.lan", 1)
    assert (kind, "hub.lan" in cause, "DNS" in cause) == ("broker", True, True)
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.verify_message = "certificate has expired"
    assert explain_connect_error(verify, "hub", 8883) == (
        "certificate",
        "the broker's certificate at hub:8883 was refused: certificate has expired",
    )
    alert = ssl.SSLError(1, "[SSL: SSLV3_ALERT_CERTIFICATE_REVOKED] sslv3 alert certificate revoked")
    alert.reason = "SSLV3_ALERT_CERTIFICATE_REVOKED"
    assert explain_connect_error(alert, "hub", 8883)[0] == "certificate"
    assert "timed out" in explain_connect_error(TimeoutError(), "hub", 1)[1]


def test_a_trouble_is_logged_once_then_reminded_then_cleared(caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    changes: list[int] = []
    troubles = Troubles(lambda: changes.append(1), remind_s=300, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="edge.troubles")
    for _ in range(20):  # 20 retries within 2 minutes: one line
        troubles.report("broker", "nothing accepts connections", next_retry_at=now[0] + 4)
        now[0] += 6
    assert [r.getMessage() for r in caplog.records] == [
        "broker: nothing accepts connections; next try in 4 s"
    ]
    now[0] = 1000.0 + 301
    troubles.report("broker", "nothing accepts connections", next_retry_at=now[0] + 60)
    assert len(caplog.records) == 2
    assert caplog.records[1].attempts == 21  # type: ignore[attr-defined]
    assert troubles.active()["broker"]["attempts"] == 21
    troubles.clear("broker")
    assert caplog.records[-1].getMessage() == "broker: recovered after 301 s"
    assert troubles.active() == {}
    # The heartbeat sent after the reconnection says why the box was silent, once.
    assert troubles.for_heartbeat() == {"broker": "nothing accepts connections"}
    assert troubles.for_heartbeat() == {}
    assert len(changes) == 2  # started, cleared: the status file is rewritten on each


def test_the_heartbeat_carries_problems_by_kind() -> None:
    body = {"site": "s", "device": "d", "ts": 1_700_000_000, "agent_version": "0.1.0", "model": "m@1",
            "uptime_s": 5, "fps": 1.0, "inference_p50_ms": 1.0, "inference_p95_ms": 1.0, "cpu_percent": 1.0,
            "rss_mb": 1.0, "disk_free_mb": 1.0, "outbox_depth": 0, "outbox_dropped": 0}  # fmt: skip
    beat = wire.Heartbeat(**body, problems={"broker": "nothing accepts connections"})
    back = wire.decode(wire.encode(beat), wire.Channel.HEARTBEAT)
    assert isinstance(back, wire.Heartbeat)
    assert back.problems == {"broker": "nothing accepts connections"}
    old = {k: v for k, v in wire.Heartbeat(**body).model_dump().items() if k != "problems"}
    assert wire.Heartbeat(**old).problems == {}  # agents before this field still decode
    with pytest.raises(WireError, match="problems"):
        wire.decode(wire.encode(beat).replace(b"broker", b"kitten"), wire.Channel.HEARTBEAT)


def test_status_formatting_and_a_missing_file(tmp_path: Path) -> None:
    body = {"site": "lyon", "device": "cam-1", "agent_version": "0.1.0", "pid": 42, "state": "running",
            "updated_at": 1000.0, "broker": "hub:8883", "connected": False, "outbox_depth": 12,
            "outbox_dropped": 0, "frames": 300,
            "troubles": {"broker": {"cause": "no answer", "since": 940.0, "attempts": 7,
                                    "next_retry_at": 1030.0}}}  # fmt: skip
    text = format_status(body, now=1010.0)
    assert "broker hub:8883: NOT connected" in text
    assert "broker: no answer (since 70 s ago, 7 attempts; next try in 20 s)" in text
    assert "not running?" in format_status(body, now=1000.0 + 600)
    with pytest.raises(VigieError, match=r"no agent status at .*--outbox"):
        read_status(status_path(tmp_path / "none.sqlite"))


def test_link_to_a_dead_broker_says_why_then_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not available")
    port = free_port()  # nothing listens there yet
    caplog.set_level(logging.WARNING, logger="edge.troubles")
    link = MqttLink(
        BrokerConfig(host="127.0.0.1", port=port), Outbox(tmp_path / "o.sqlite"), site="s", device="d"
    )
    link.start()
    broker = None
    try:
        time.sleep(4.0)  # paho tries at once, then after 1 s and 2 s
        lines = [r.getMessage() for r in caplog.records]
        cause = f"broker: nothing accepts connections at 127.0.0.1:{port} (connection refused)"
        assert len(lines) == 1, lines
        assert lines[0].startswith(cause)
        assert "next try in" in lines[0]
        assert link.troubles.active()["broker"]["attempts"] >= 2
        broker = start_broker(tmp_path / "broker", port)
        deadline = time.monotonic() + 30
        while not link.connected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert link.connected
        assert link.troubles.active() == {}
        assert caplog.records[-1].getMessage().startswith("broker: recovered after")
        assert link.troubles.for_heartbeat()["broker"].startswith("nothing accepts connections")
    finally:
        link.stop()
        if broker is not None:
            broker.stop()


@pytest.mark.e2e
def test_agent_against_a_dead_broker_logs_the_cause_and_edge_status_shows_it(
    model_dir: Path, vtest_avi: Path, tmp_path: Path
) -> None:
    port = free_port()
    outbox = tmp_path / "o.sqlite"
    log = tmp_path / "agent.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            cli("edge", "run", "--site", "test", "--device", "cam-1", "--source", str(vtest_avi), "--loop",
                "--fps-cap", "5", "--model-dir", str(model_dir), "--broker", f"127.0.0.1:{port}",
                "--outbox", str(outbox)),
            stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        cause = f"nothing accepts connections at 127.0.0.1:{port} (connection refused)"
        deadline = time.monotonic() + 60
        while cause not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert cause in log.read_text(), log.read_text()
        shown = None
        while time.monotonic() < deadline:
            shown = subprocess.run(
                cli("edge", "status", "--outbox", str(outbox)), capture_output=True, text=True
            )
            if cause in shown.stdout:
                break
            time.sleep(0.2)
        assert shown is not None
        assert shown.returncode == 1, shown.stdout + shown.stderr
        assert f"broker 127.0.0.1:{port}: NOT connected" in shown.stdout
        assert f"broker: {cause}" in shown.stdout
        # Several retries by now (1 s, 2 s, 4 s...), one line.
        assert sum(cause in line for line in log.read_text().splitlines()) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    stopped = read_status(status_path(outbox))
    assert stopped["state"] == "stopped"


@pytest.mark.e2e
def test_a_dead_camera_is_in_the_heartbeat_and_in_edge_status(
    broker: LocalBroker, model_dir: Path, tmp_path: Path
) -> None:
    import paho.mqtt.client as mqtt

    beats: list[wire.Heartbeat] = []
    tap = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="trouble-tap")

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        beat = wire.decode(bytes(message.payload), wire.Channel.HEARTBEAT)
        assert isinstance(beat, wire.Heartbeat)
        beats.append(beat)

    tap.on_message = on_message
    tap.connect("127.0.0.1", broker.port)
    tap.subscribe(wire.topic("test", "cam-1", wire.Channel.HEARTBEAT), qos=0)
    tap.loop_start()
    outbox = tmp_path / "o.sqlite"
    proc = subprocess.Popen(
        cli("edge", "run", "--site", "test", "--device", "cam-1", "--source", "/dev/video99",
            "--model-dir", str(model_dir), "--broker", f"127.0.0.1:{broker.port}", "--outbox", str(outbox)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not any("camera" in b.problems for b in beats) and time.monotonic() < deadline:
            time.sleep(0.2)
        problem = next((b.problems["camera"] for b in beats if "camera" in b.problems), None)
        assert problem is not None, beats
        assert problem.startswith("camera unavailable (/dev/video99)")
        shown = subprocess.run(cli("edge", "status", "--outbox", str(outbox)), capture_output=True, text=True)
        assert shown.returncode == 1
        assert f"broker 127.0.0.1:{broker.port}: connected" in shown.stdout
        assert "camera: camera unavailable (/dev/video99)" in shown.stdout
    finally:
        tap.loop_stop()
        tap.disconnect()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    # Retried every 0.5, 1, 2, 4 s...: logged once.
    assert err.count("camera: camera unavailable (/dev/video99)") == 1, err
