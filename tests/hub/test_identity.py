"""Device identity at the broker (per-device credentials, ACL pattern) and at the hub (body vs topic)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from hub.broker_auth import device_username, render_device_acl, write_password_file
from hub.storage import EventQuery, SQLiteStore
from tests.conftest import cli, need_service
from tests.test_wire import person_event
from vigie import wire
from vigie.broker import find_mosquitto, start_broker
from vigie.netutil import free_port

pytestmark = pytest.mark.e2e


def connect(port: int, user: str | None, password: str | None) -> tuple[mqtt.Client, Any]:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{time.time_ns()}")
    result: dict[str, Any] = {}
    client.on_connect = lambda c, u, f, reason, p: result.setdefault("reason", reason)
    if user:
        client.username_pw_set(user, password)
    client.connect("127.0.0.1", port)
    client.loop_start()
    deadline = time.monotonic() + 5
    while "reason" not in result and time.monotonic() < deadline:
        time.sleep(0.05)
    return client, result.get("reason")


def test_devices_can_only_publish_as_themselves(tmp_path: Path) -> None:
    need_service(find_mosquitto() is not None, "mosquitto")
    pw = tmp_path / "passwd"
    acl = tmp_path / "acl"
    users = {"vigie-hub": "hub-secret", device_username("load", "cam-0"): "pw0",
             device_username("load", "cam-1"): "pw1"}  # fmt: skip
    write_password_file(pw, users.items())
    acl.write_text(render_device_acl([("load", "cam-0"), ("load", "cam-1")], "vigie-hub"))
    port = free_port()
    broker = start_broker(tmp_path / "broker", port, password_file=pw, acl_file=acl)
    (tmp_path / "hub.pw").write_text("hub-secret")
    db = tmp_path / "hub.sqlite"
    SQLiteStore(db).close()
    log = tmp_path / "ingest.log"
    with log.open("wb") as fh:
        ingest = subprocess.Popen(
            cli("hub", "ingest", "--db", str(db), "--broker", f"127.0.0.1:{port}",
                "--mqtt-username", "vigie-hub", "--mqtt-password-file", str(tmp_path / "hub.pw")),
            stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while "ingest connected" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "ingest connected" in log.read_text(), log.read_text()

        # Nobody without a password, nobody with a wrong one.
        anon, reason = connect(port, None, None)
        assert reason is not None
        assert reason.is_failure
        anon.loop_stop()
        wrong, reason = connect(port, device_username("load", "cam-0"), "guess")
        assert reason is not None
        assert reason.is_failure
        wrong.loop_stop()

        cam0, reason = connect(port, device_username("load", "cam-0"), "pw0")
        assert not reason.is_failure
        own = person_event("load", "cam-0", "own")
        other_topic = person_event("load", "cam-1", "spoofed-topic")
        other_body = person_event("load", "cam-1", "spoofed-body")
        for topic_device, e in (("cam-0", own), ("cam-1", other_topic), ("cam-0", other_body)):
            info = cam0.publish(wire.topic("load", topic_device, wire.Channel.EVENT), wire.encode(e), qos=1)
            info.wait_for_publish(5)
        cam0.loop_stop()
        time.sleep(2.0)
        store = SQLiteStore(db)
        rows = store.list_events(EventQuery())[0]
        assert [r["zone"] for r in rows] == ["own"]  # the broker dropped the other device's topic
        (q,) = store.list_quarantine()
        assert q["field"] == "device"  # the hub refused the body naming another device
        assert "cam-1" in q["reason"]

        # Revocation: cam-1 leaves the password file; the broker reloads it on SIGHUP.
        write_password_file(pw, [(u, p) for u, p in users.items() if not u.endswith("cam-1")])
        broker.process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        cam1, reason = connect(port, device_username("load", "cam-1"), "pw1")
        assert reason is not None
        assert reason.is_failure
        cam1.loop_stop()
    finally:
        ingest.terminate()
        ingest.wait(timeout=20)
        broker.stop()


def test_acl_text() -> None:
    text = render_device_acl([("load", "cam-0")], "hub")
    assert "user load/cam-0\ntopic write vigie/v1/load/cam-0/event" in text
    assert "topic read vigie/v1/load/cam-0/ota" in text
    assert "user hub\ntopic read vigie/v1/#" in text
    assert "pattern" not in text  # an identity the hub did not enrol gets no topic at all
    with pytest.raises(Exception, match="slug"):
        device_username("load", "cam/1")
