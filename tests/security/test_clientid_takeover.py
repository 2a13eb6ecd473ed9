"""Issue 17, finding 2: an enrolled device cannot take over another client's MQTT session.

Real Mosquitto, run from the configuration `hub/broker_config.py` generates, with two devices
enrolled through the hub's CA: device cam-2 connects under cam-1's client id, then under the
hub ingest's; neither cam-1 nor the hub is disconnected.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge.enrol import make_csr
from hub.broker_config import render_mosquitto_conf
from hub.enrolment import EnrolmentService, HubState
from hub.storage import SQLiteStore
from tests.conftest import need_service
from vigie.broker import find_mosquitto
from vigie.netutil import free_port, wait_for_port

pytestmark = pytest.mark.e2e
HUB_ID = "vigie-hub-ingest"


@dataclass
class Broker:
    state: HubState
    certs: Path
    disconnects: dict[str, int] = field(default_factory=dict)


def _enrol(service: EnrolmentService, certs: Path, device: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = service.create_token("port", "rpi5", device=device)
    result = service.enrol(token, "port", device, make_csr(key, "port", device))
    (certs / f"{device}.crt").write_text(result.certificate)
    (certs / f"{device}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    need_service(find_mosquitto() is not None, "mosquitto")
    state = HubState(
        tmp_path / "state", broker_host="localhost", tls_port=free_port(), tls_bind="127.0.0.1",
        local_port=free_port(), broker_user="root" if os.geteuid() == 0 else None,
    )  # fmt: skip
    state.init(["localhost", "127.0.0.1"])
    certs = tmp_path / "certs"
    certs.mkdir()
    store = SQLiteStore(tmp_path / "hub.sqlite")
    service = EnrolmentService(store, state)
    for device in ("cam-1", "cam-2"):
        _enrol(service, certs, device)
    store.close()
    conf = state.layout.folder / "mosquitto.conf"
    assert conf.read_text() == render_mosquitto_conf(state.layout, state.pki)
    with (tmp_path / "broker.log").open("wb") as log:
        proc = subprocess.Popen([find_mosquitto() or "mosquitto", "-c", str(conf)], stdout=log, stderr=log)
    try:
        for port in (state.tls_port, state.local_port):  # both listeners, before any client
            assert wait_for_port(port), (tmp_path / "broker.log").read_text()
        yield Broker(state, certs)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _connect(b: Broker, name: str, client_id: str, *, device: str | None) -> tuple[mqtt.Client, Any]:
    """A client as ``device`` (mutual TLS) or as the hub (loopback listener, password)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    result: dict[str, Any] = {}
    client.on_connect = lambda c, u, f, reason, p: result.setdefault("reason", reason)

    def gone(c: Any, u: Any, f: Any, reason: Any, p: Any) -> None:
        b.disconnects[name] = b.disconnects.get(name, 0) + 1

    client.on_disconnect = gone
    if device is None:
        client.username_pw_set("vigie-hub", b.state.layout.hub_password_file.read_text())
        client.connect("127.0.0.1", b.state.local_port)
    else:
        client.tls_set(ca_certs=str(b.state.pki / "ca.crt"), certfile=str(b.certs / f"{device}.crt"),
                       keyfile=str(b.certs / f"{device}.key"), cert_reqs=ssl.CERT_REQUIRED)  # fmt: skip
        client.connect("localhost", b.state.tls_port)
    client.loop_start()
    deadline = time.monotonic() + 5
    while "reason" not in result and time.monotonic() < deadline:
        time.sleep(0.05)
    return client, result.get("reason")


def test_a_device_cannot_take_over_another_client_id(broker: Broker) -> None:
    clients = []
    try:
        hub, reason = _connect(broker, "hub", HUB_ID, device=None)
        clients.append(hub)
        assert reason == 0, reason
        victim, reason = _connect(broker, "cam-1", "port/cam-1", device="cam-1")
        clients.append(victim)
        assert reason == 0, reason
        # The compromised cam-2 tries cam-1's id, then the hub's, each time staying connected a moment.
        for stolen in ("port/cam-1", "vigie-port-cam-1", HUB_ID):
            attacker, _ = _connect(broker, f"attacker as {stolen}", stolen, device="cam-2")
            clients.append(attacker)
            time.sleep(1.0)
        assert broker.disconnects.get("cam-1", 0) == 0, broker.disconnects
        assert broker.disconnects.get("hub", 0) == 0, broker.disconnects
        assert victim.is_connected()
        assert hub.is_connected()
    finally:
        for c in clients:
            c.loop_stop()
            c.disconnect()


def test_the_device_listener_binds_the_client_id_to_the_certificate(broker: Broker) -> None:
    conf = (broker.state.layout.folder / "mosquitto.conf").read_text()
    device_listener = conf.split("# The hub's ingest")[0]
    assert "use_identity_as_username true" in device_listener
    assert "use_username_as_clientid true" in device_listener
