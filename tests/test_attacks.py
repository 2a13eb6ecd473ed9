"""Hostile devices against the real broker and hub: floods, replays, oversized and nested payloads.

Other attacks live beside the code they attack and are indexed in
docs/reliability.md: ACLs and revoked certificates (tests/hub/test_enrolment.py),
tokens, roles and secrets in logs (tests/hub/test_access.py), TUF attacks and
path traversal (tests/ota/test_ota.py), spoofed bodies (tests/test_e2e.py).
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgpack
import paho.mqtt.client as mqtt
import pytest

from tests.chaos.harness import Proc, cli, stored_events
from tests.conftest import need_service
from tests.test_wire import event
from vigie import wire
from vigie.broker import LocalBroker, find_mosquitto, start_broker
from vigie.netutil import free_port, wait_for_port

pytestmark = pytest.mark.e2e


class Hub:
    def __init__(self, tmp: Path, broker: LocalBroker, env: dict[str, str]) -> None:
        self.port = free_port()
        self.db = tmp / "hub.sqlite"
        self.proc = Proc(
            cli("hub", "serve", "--port", str(self.port), "--db", str(self.db),
                "--broker", f"127.0.0.1:{broker.port}"),
            tmp / "hub.log", env={"VIGIE_HUB_AUTH": "off", **env},
        ).start()  # fmt: skip
        assert wait_for_port(self.port, timeout=30), self.proc.text()

    def health(self) -> dict[str, object]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def count(self, device_like: str) -> int:
        """Stored events of the devices whose name matches ``device_like`` (SQL LIKE: only ``%``)."""
        pattern = re.compile(re.escape(device_like).replace("%", ".*"))
        return sum(1 for e in stored_events(self.db) if pattern.fullmatch(str(e["device"])))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[LocalBroker, Hub]]:
    need_service(find_mosquitto() is not None, "mosquitto")
    broker = start_broker(tmp_path / "broker", free_port())
    # A low per-device limit so that a flood shows within seconds.
    hub = Hub(tmp_path, broker, {"VIGIE_HUB_DEVICE_RATE": "20", "VIGIE_HUB_DEVICE_BURST": "300"})
    deadline = time.monotonic() + 20
    while not hub.health()["ingest"]["connected"]:  # type: ignore[index]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    yield broker, hub
    hub.proc.stop()
    broker.stop()


def _client(port: int, name: str) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
    c.max_inflight_messages_set(200)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def test_a_flooding_device_is_held_to_its_rate_and_others_are_unaffected(
    rig: tuple[LocalBroker, Hub], tmp_path: Path
) -> None:
    broker, hub = rig
    honest = subprocess.Popen(
        cli("sim", "--devices", "30", "--duration", "25", "--zones", "3", "--window", "10",
            "--broker", f"127.0.0.1:{broker.port}", "--site", "sim"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    flooder = _client(broker.port, "flooder")
    topic = wire.topic("test", "flood-1", wire.Channel.EVENT)
    started = time.monotonic()
    sent = 0
    pending: list[mqtt.MQTTMessageInfo] = []
    while time.monotonic() - started < 15:
        pending.append(
            flooder.publish(
                topic,
                wire.encode(
                    event(
                        site="test", device="flood-1", k=3, counts={"person": 4}, mean_counts={"person": 2.5}
                    )
                ),
                qos=1,
            )
        )
        sent += 1
        if len(pending) >= 500:  # bounded: paho loses QoS 1 messages past 65,535 queued
            for info in pending:
                info.wait_for_publish(30)
            pending.clear()
    for info in pending:
        info.wait_for_publish(30)
    flood_s = time.monotonic() - started
    flooder.loop_stop()
    out, _ = honest.communicate(timeout=90)
    acked = int(re.search(r"acknowledged by the broker (\d+)", out).group(1))  # type: ignore[union-attr]
    time.sleep(3)
    stored_flood = hub.count("flood-%")
    print(
        f"flood: {sent} events in {flood_s:.1f} s from one device, {stored_flood} stored "
        f"(limit 20/s, burst 300); honest fleet: {acked} acknowledged, {hub.count('dev-%')} stored"
    )
    # The flood is refused beyond burst + rate × time (and the hub stays up) ...
    assert sent > 3000, sent
    assert stored_flood <= 300 + 20 * (flood_s + 5), (sent, stored_flood)
    assert hub.health()["ingest"]["rate_limited"] >= sent - stored_flood  # type: ignore[index]
    assert hub.proc.alive()
    # ... while every event the honest devices got acknowledged is stored.
    assert acked > 0
    assert hub.count("dev-%") == acked, out


def test_replays_nested_and_oversized_payloads(rig: tuple[LocalBroker, Hub]) -> None:
    broker, hub = rig
    c = _client(broker.port, "attacker")
    good = event(site="test", device="cam-7", k=3, counts={"person": 4}, mean_counts={"person": 2.5})
    topic = wire.topic("test", "cam-7", wire.Channel.EVENT)
    payload = wire.encode(good)
    for _ in range(5):  # a captured message replayed: stored once
        c.publish(topic, payload, qos=1).wait_for_publish(5)
    # The same capture replayed under another device's topic: quarantined (the body names cam-7).
    c.publish(wire.topic("test", "cam-8", wire.Channel.EVENT), payload, qos=1).wait_for_publish(5)
    # Deeply nested (8,000 levels of one-element arrays, inside the 8 KiB cap) and a map bomb.
    nested = b"\x91" * 8000 + b"\xc0"
    c.publish(topic, nested, qos=1).wait_for_publish(5)
    bomb = msgpack.packb({"v": 1, "kind": "zone_count", "counts": {str(i): i for i in range(1000)}})
    c.publish(topic, bomb, qos=1).wait_for_publish(5)
    deadline = time.monotonic() + 15
    while hub.health()["ingest"]["received"] < 8 and time.monotonic() < deadline:  # type: ignore[index, operator]
        time.sleep(0.2)
    health = hub.health()["ingest"]
    assert health["stored"] == 1, health  # type: ignore[index]
    assert health["duplicates"] == 4, health  # type: ignore[index]
    assert health["quarantined"] == 3, health  # type: ignore[index]
    # Oversized: the broker itself refuses a packet over 16 KiB and drops the connection.
    big = _client(broker.port, "big")
    disconnected: list[object] = []
    big.on_disconnect = lambda *a: disconnected.append(a)
    big.publish(topic, bytes(100_000), qos=1)
    deadline = time.monotonic() + 10
    while not disconnected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert disconnected, "the broker should drop a client sending a 100 kB packet"
    time.sleep(1)
    assert hub.health()["ingest"]["received"] == 8  # type: ignore[index]
    assert hub.proc.alive()
    c.loop_stop()
    big.loop_stop()


def test_secrets_never_reach_logs_or_the_audit_trail(tmp_path: Path, model_dir: Path) -> None:
    """A password, a bearer token, a wrong password and an RTSP password: none in any log or audit row."""
    need_service(find_mosquitto() is not None, "mosquitto")
    password = "Correct-Horse-Battery-9431"
    wrong = "Wrong-Guess-Battery-1234"
    rtsp_secret = "rtsp-Pa55word-77"
    db = tmp_path / "hub.sqlite"
    (tmp_path / "pw").write_text(password)
    subprocess.run(
        cli("hub", "user", "add", "ana", "--role", "analyst", "--password-file", str(tmp_path / "pw"),
            "--db", str(db)), check=True, capture_output=True,
    )  # fmt: skip
    broker = start_broker(tmp_path / "broker", free_port())
    port = free_port()
    hub = Proc(
        cli("--log-level", "DEBUG", "hub", "serve", "--port", str(port), "--db", str(db),
            "--broker", f"127.0.0.1:{broker.port}"),
        tmp_path / "hub.log",
    ).start()  # fmt: skip
    try:
        assert wait_for_port(port, timeout=30), hub.text()
        base = f"http://127.0.0.1:{port}"

        def post_login(pw: str) -> tuple[int, dict[str, object]]:
            data = f"username=ana&password={pw}".encode()
            req = urllib.request.Request(base + "/v1/auth/token", data=data, method="POST")  # noqa: S310
            try:
                with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as exc:
                return exc.code, {}

        assert post_login(wrong)[0] == 401
        status, body = post_login(password)
        assert status == 200
        token = str(body["access_token"])
        for path in ("/v1/events", f"/v1/events?token={token}", "/v1/audit?purpose=check"):
            req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
            with contextlib.suppress(urllib.error.HTTPError), urllib.request.urlopen(req, timeout=5):  # noqa: S310
                pass
        # An agent on an unreachable RTSP camera, with the password in its URL, logging at DEBUG.
        agent = Proc(
            cli("--log-level", "DEBUG", "edge", "run", "--site", "test", "--device", "cam-1",
                "--source", f"rtsp://viewer:{rtsp_secret}@127.0.0.1:9/stream", "--model-dir", str(model_dir),
                "--broker", f"127.0.0.1:{broker.port}", "--outbox", str(tmp_path / "o.sqlite")),
            tmp_path / "agent.log",
        ).start()  # fmt: skip
        deadline = time.monotonic() + 30
        while "camera unavailable" not in agent.text() and time.monotonic() < deadline:
            time.sleep(0.5)
        agent.stop()
        assert "viewer:***@127.0.0.1" in agent.text()  # it did log the source, redacted
    finally:
        hub.stop()
        broker.stop()
    texts = {"hub log": hub.text(), "broker log": broker.log_path.read_text(), "agent log": agent.text()}
    with contextlib.closing(sqlite3.connect(db)) as con:
        texts["audit trail"] = "\n".join(str(r) for r in con.execute("SELECT * FROM audit"))
    assert "/v1/auth/token" in texts["audit trail"]  # the trail did record the logins
    for where, text in texts.items():
        for secret in (password, wrong, token, rtsp_secret):
            assert secret not in text, f"a secret reached the {where}"
