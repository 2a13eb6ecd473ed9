"""Enrolment: tokens, CSR signing, the registry, and certificates at a real TLS Mosquitto."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from edge.enrol import make_csr
from hub.enrolment import EnrolmentService, HubState
from hub.storage import EventQuery, SQLiteStore
from tests.conftest import cli, need_service
from tests.test_wire import person_event
from vigie import wire
from vigie.broker import find_mosquitto
from vigie.exceptions import EnrolmentError
from vigie.netutil import free_port, wait_for_port


def _csr(key: Any = None, cn: str = "whatever") -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


@pytest.fixture
def service(store: Any, tmp_path: Path) -> EnrolmentService:
    state = HubState(tmp_path / "state")
    state.init(["localhost"])
    return EnrolmentService(store, state)


def test_token_is_single_use_and_bound(service: EnrolmentService) -> None:
    token = service.create_token("port", "rpi5", device="cam-1")
    with pytest.raises(EnrolmentError, match="for device 'cam-1', not 'cam-2'"):
        service.enrol(token, "port", "cam-2", _csr())
    with pytest.raises(EnrolmentError, match="for site 'port', not 'gare'"):
        service.enrol(token, "gare", "cam-1", _csr())
    result = service.enrol(token, "port", "cam-1", _csr(cn="other/cam-9"))
    cert = x509.load_pem_x509_certificate(result.certificate.encode())
    # The hub names the certificate, not the request: a device cannot ask for another identity.
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "port/cam-1"
    assert result.profile == "rpi5"
    assert result.tuf_root is not None
    assert result.tuf_root["signed"]["_type"] == "root"
    with pytest.raises(EnrolmentError, match="already used by port/cam-1"):
        service.enrol(token, "port", "cam-1", _csr())
    with pytest.raises(EnrolmentError, match="unknown enrolment token"):
        service.enrol("vgt_made-up-token", "port", "cam-1", _csr())


def test_expired_token_weak_key_and_double_enrolment(service: EnrolmentService) -> None:
    old = service.create_token("port", "rpi4", ttl_s=60, now=time.time() - 120)
    with pytest.raises(EnrolmentError, match="expired"):
        service.enrol(old, "port", "cam-1", _csr())
    weak = service.create_token("port", "rpi4")
    weak_key = rsa.generate_private_key(65537, 1024)  # noqa: S505 (the weak key under test)
    with pytest.raises(EnrolmentError, match="RSA key of 1024 bits"):
        service.enrol(weak, "port", "cam-1", _csr(weak_key))
    # The failed attempt did not spend the token (one transaction).
    service.enrol(weak, "port", "cam-1", _csr())
    again = service.create_token("port", "rpi4")
    with pytest.raises(EnrolmentError, match=r"already enrolled.*vigie hub revoke port/cam-1"):
        service.enrol(again, "port", "cam-1", _csr())
    with pytest.raises(EnrolmentError, match="not a hardware profile"):
        service.create_token("port", "rpi3")


def test_revoke_then_reenrol_keeps_old_serial_revoked(service: EnrolmentService) -> None:
    first = service.enrol(service.create_token("port", "rpi4"), "port", "cam-1", _csr())
    serial1 = format(x509.load_pem_x509_certificate(first.certificate.encode()).serial_number, "x")
    assert service.revoke("port", "cam-1") == serial1
    second = service.enrol(service.create_token("port", "rpi4"), "port", "cam-1", _csr())
    serial2 = format(x509.load_pem_x509_certificate(second.certificate.encode()).serial_number, "x")
    revoked = {s for s, _ in service.store.list_revoked()}
    assert serial1 in revoked
    assert serial2 not in revoked
    crl = x509.load_pem_x509_crl((service.state.pki / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(int(serial1, 16)) is not None
    assert crl.get_revoked_certificate_by_serial_number(int(serial2, 16)) is None
    acl = (service.state.layout.folder / "acl").read_text()
    assert "user port/cam-1\ntopic write vigie/v1/port/cam-1/event" in acl
    with pytest.raises(EnrolmentError, match="not enrolled"):
        service.revoke("port", "cam-404")


# -- end to end: hub under uvicorn, `vigie edge enrol`, a TLS Mosquitto from the generated config ---------
def _tls_client(pki: Path, port: int) -> tuple[mqtt.Client, dict[str, Any]]:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{time.time_ns()}")
    client.tls_set(
        ca_certs=str(pki / "ca.crt"), certfile=str(pki / "device.crt"), keyfile=str(pki / "device.key")
    )
    result: dict[str, Any] = {}
    client.on_connect = lambda c, u, f, reason, p: result.setdefault("reason", reason)
    try:
        client.connect("localhost", port)
    except (ssl.SSLError, OSError) as exc:
        result["error"] = exc
        return client, result
    client.loop_start()
    deadline = time.monotonic() + 5
    while "reason" not in result and time.monotonic() < deadline:
        time.sleep(0.05)
    return client, result


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(*args), capture_output=True, text=True, timeout=60, env={**os.environ, **env})


@pytest.mark.e2e
def test_enrolment_end_to_end_with_tls_broker(tmp_path: Path, bus_jpg: Path, model_dir: Path) -> None:
    need_service(find_mosquitto() is not None, "mosquitto")
    tls_port, local_port, http_port = free_port(), free_port(), free_port()
    state, db = tmp_path / "state", tmp_path / "hub.sqlite"
    env = {
        "VIGIE_HUB_STATE_DIR": str(state), "VIGIE_HUB_DB": str(db), "VIGIE_HUB_TLS_PORT": str(tls_port),
        "VIGIE_HUB_BROKER_HOST": "localhost", "VIGIE_HUB_BROKER_USER": "root",
        "VIGIE_HUB_TLS_BIND": "127.0.0.1", "VIGIE_HUB_LOCAL_PORT": str(local_port),
    }  # fmt: skip
    done = _run("hub", "init", "--broker-host", "localhost", "--broker-host", "127.0.0.1", env=env)
    assert done.returncode == 0, done.stderr
    conf = state / "broker" / "mosquitto.conf"
    assert f"listener {tls_port} 127.0.0.1" in conf.read_text()
    broker = subprocess.Popen([find_mosquitto() or "mosquitto", "-c", str(conf)], stderr=subprocess.PIPE)
    hub_log = (tmp_path / "hub.log").open("wb")
    hub = subprocess.Popen(
        cli("hub", "serve", "--port", str(http_port), "--db", str(db), "--broker", f"127.0.0.1:{local_port}",
            "--mqtt-username", "vigie-hub", "--mqtt-password-file", str(state / "broker" / "hub.password")),
        stdout=hub_log, stderr=subprocess.STDOUT, env={**os.environ, **env},
    )  # fmt: skip
    clients: list[mqtt.Client] = []
    try:
        assert wait_for_port(tls_port)
        assert wait_for_port(http_port, timeout=30)
        token = _run("hub", "enrol-token", "create", "--site", "port", "--profile", "rpi5",
                     "--device", "cam-1", "--quiet", env=env).stdout.strip()  # fmt: skip
        assert token.startswith("vgt_")
        assert token not in db.read_bytes().decode("latin-1")  # only its hash is stored
        pki = tmp_path / "device" / "pki"
        (tmp_path / "token").write_text(token)
        enrol = ("edge", "enrol", "--hub", f"http://127.0.0.1:{http_port}", "--site", "port",
                 "--device", "cam-1", "--token-file", str(tmp_path / "token"), "--pki-dir", str(pki),
                 "--ota-dir", str(tmp_path / "device" / "ota"))  # fmt: skip
        done = _run(*enrol, env={})
        assert done.returncode == 0, done.stderr
        assert "enrolled: port/cam-1" in done.stdout
        assert (pki / "device.key").stat().st_mode & 0o077 == 0
        assert (
            json.loads((tmp_path / "device" / "ota" / "metadata" / "root.json").read_text())["signed"][
                "version"
            ]
            == 1
        )
        again = _run(*enrol, env={})
        assert again.returncode == 0
        assert "already enrolled" in again.stdout  # idempotent: the playbook relies on it

        # A real agent publishes over mutual TLS with its new certificate; the hub stores the event.
        agent = subprocess.run(
            cli("edge", "run", "--site", "port", "--device", "cam-1", "--source", str(bus_jpg),
                "--broker", f"localhost:{tls_port}", "--mqtt-tls-dir", str(pki), "--window", "10",
                "--outbox", str(tmp_path / "outbox.sqlite"), "--model-dir", str(model_dir)),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert agent.returncode == 0, agent.stderr[-2000:]
        deadline = time.monotonic() + 20
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not rows:
            store = SQLiteStore(db)
            rows = store.list_events(EventQuery())[0]
            store.close()
            time.sleep(0.3)
        assert rows
        assert rows[0]["device"] == "cam-1"
        assert rows[0]["counts"]["bus"] == "<3"  # one bus, sent under the default k = 3

        # Its certificate may publish under its own topics only.
        cam1, result = _tls_client(pki, tls_port)
        clients.append(cam1)
        assert "reason" in result
        assert not result["reason"].is_failure
        spoof = person_event("port", "cam-2", "spoofed")
        cam1.publish(
            wire.topic("port", "cam-2", wire.Channel.EVENT), wire.encode(spoof), qos=1
        ).wait_for_publish(5)
        own = person_event("port", "cam-1", "own")  # the hub quarantines k < 3
        cam1.publish(
            wire.topic("port", "cam-1", wire.Channel.EVENT), wire.encode(own), qos=1
        ).wait_for_publish(5)
        deadline = time.monotonic() + 15
        zones: list[str] = []
        while time.monotonic() < deadline and "own" not in zones:
            store = SQLiteStore(db)
            zones = [r.get("zone") for r in store.list_events(EventQuery())[0]]
            store.close()
            time.sleep(0.2)
        assert "own" in zones
        assert "spoofed" not in zones  # the broker dropped it: no ACL entry for port/cam-2

        # Revocation: the live session loses its topics, and the next handshake fails.
        done = _run("hub", "revoke", "port/cam-1", env=env)
        assert done.returncode == 0, done.stderr
        time.sleep(1.0)
        late = person_event("port", "cam-1", "after-revocation")
        cam1.publish(wire.topic("port", "cam-1", wire.Channel.EVENT), wire.encode(late), qos=1)
        _, refused = _tls_client(pki, tls_port)
        assert "reason" not in refused or refused["reason"].is_failure, refused
        time.sleep(1.5)
        store = SQLiteStore(db)
        zones = [r.get("zone") for r in store.list_events(EventQuery())[0]]
        store.close()
        assert "after-revocation" not in zones
        listing = _run("hub", "devices", "--json", env=env)
        (row,) = [r for r in json.loads(listing.stdout) if r["device"] == "port/cam-1"]
        assert row["enrolment"] == "revoked"
    finally:
        for c in clients:
            c.loop_stop()
        hub.terminate()
        hub.wait(timeout=20)
        broker.terminate()
        broker.wait(timeout=10)
        hub_log.close()


def test_make_csr_is_signed_by_the_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.load_pem_x509_csr(make_csr(key, "port", "cam-1"))
    assert csr.is_signature_valid
    assert csr.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
