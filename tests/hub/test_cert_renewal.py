"""Certificates that renew themselves (issue 21): devices over their current certificate and key, the
broker's by the hub's periodic check; with libfaketime, a device still connects after day 825."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge.cert_renewal import renewal_due
from hub.cert_renewal import broker_cert_due, renew_device_certificate
from hub.enrolment import EnrolmentService, HubState
from hub.pki import DeviceCA
from hub.storage import SQLiteStore
from tests.conftest import ROOT, cli, need_service
from tests.hub.test_enrolment import _csr
from vigie.broker import find_mosquitto
from vigie.exceptions import EnrolmentError
from vigie.netutil import free_port, wait_for_port

DAY = 86400.0


def _serial(pem: bytes | str) -> str:
    data = pem.encode() if isinstance(pem, str) else pem
    return format(x509.load_pem_x509_certificate(data).serial_number, "x")


def test_renewal_is_due_months_before_expiry() -> None:
    assert not renewal_due(1000 * DAY, 800 * DAY)  # 200 days left
    assert renewal_due(1000 * DAY, 821 * DAY)  # 179 days left
    assert renewal_due(1000 * DAY, 1001 * DAY)  # expired: due (the hub will say it is too late)


def test_a_device_renews_with_its_certificate_and_key_and_nothing_else(store: Any, tmp_path: Path) -> None:
    state = HubState(tmp_path / "state")
    state.init(["localhost"])
    service = EnrolmentService(store, state)
    key = ec.generate_private_key(ec.SECP256R1())
    first = service.enrol(service.create_token("port", "rpi5", device="cam-1"), "port", "cam-1", _csr(key))
    cert0 = first.certificate.encode()
    now = time.time()

    second = renew_device_certificate(store, service.ca, cert0, _csr(key), now)
    assert _serial(second) != _serial(cert0)
    assert x509.load_pem_x509_certificate(second).subject == x509.load_pem_x509_certificate(cert0).subject
    enrolled = store.list_enrolments()[0]
    assert enrolled["serial"] == _serial(second)
    # Another key, even with the right certificate: refused (the CSR is the proof of the key).
    with pytest.raises(EnrolmentError, match="not signed by the certificate's key"):
        renew_device_certificate(store, service.ca, second, _csr(), now)
    # A certificate from another CA with the same name: refused.
    other = HubState(tmp_path / "other")
    other.init(["localhost"])
    foreign = DeviceCA.load(other.pki).sign_csr(_csr(key), "port", "cam-1").pem
    with pytest.raises(EnrolmentError, match="not issued by this hub"):
        renew_device_certificate(store, service.ca, foreign, _csr(key), now)
    # The answer to a renewal was lost: the device tries again with the certificate it still has.
    third = renew_device_certificate(store, service.ca, cert0, _csr(key), now)
    assert store.list_enrolments()[0]["serial"] == _serial(third)
    assert store.list_revoked() == []  # every one stays valid until it expires (or the device is revoked)
    # A certificate of this CA for this name and key that the registry never gave the device: refused.
    stray = service.ca.sign_csr(_csr(key), "port", "cam-1").pem
    with pytest.raises(EnrolmentError, match="was not issued to port/cam-1 by this hub"):
        renew_device_certificate(store, service.ca, stray, _csr(key), now)
    # An expired certificate cannot renew itself.
    with pytest.raises(EnrolmentError, match="not valid now"):
        renew_device_certificate(store, service.ca, third, _csr(key), now + 900 * DAY)
    # Revoking the device revokes every certificate it renewed from or to.
    service.revoke("port", "cam-1")
    revoked = {s for s, _ in store.list_revoked()}
    assert revoked == {_serial(cert0), _serial(second), _serial(third)}
    with pytest.raises(EnrolmentError, match="revoked"):
        renew_device_certificate(store, service.ca, third, _csr(key), now)


# -- day 825, with libfaketime ----------------------------------------------------------------------------
_CONNECT = """
import sys, time
from pathlib import Path
from typing import Any
from tests.hub.test_enrolment import _tls_client
client, outcome = _tls_client(Path(sys.argv[1]), int(sys.argv[2]))
ok = "reason" in outcome and not outcome["reason"].is_failure
print("accepted" if ok else f"refused {outcome}")
"""

_RENEW = """
import sys
from pathlib import Path
from typing import Any
from edge.cert_renewal import hub_of, renew_certificate
pki = Path(sys.argv[1])
print("renewed" if renew_certificate(pki, hub_of(pki)) else "not due")
"""


def _at(day: int, *command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(["faketime", "-f", f"+{day}d", *command], capture_output=True, text=True,
                          timeout=90, env=env)  # fmt: skip


def _connects(day: int, pki: Path, port: int) -> str:
    done = _at(day, sys.executable, "-c", _CONNECT, str(pki), str(port))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.e2e
def test_devices_still_connect_after_their_first_certificate_expired(tmp_path: Path) -> None:
    """Day 0: enrolled. Day 760: the hub (its periodic check renews the broker's certificate) and the
    device's renewal check run. Day 830, past the first certificate's 825 days: the device connects."""
    mosquitto = find_mosquitto()
    need_service(mosquitto is not None and shutil.which("faketime") is not None, "mosquitto and faketime")
    tls_port, local_port, http_port = free_port(), free_port(), free_port()
    state = HubState(tmp_path / "state", tls_port=tls_port, tls_bind="127.0.0.1", local_port=local_port,
                     broker_user="root")  # fmt: skip
    state.init(["localhost"])
    db = tmp_path / "hub.sqlite"
    store = SQLiteStore(db)
    service = EnrolmentService(store, state)
    key = ec.generate_private_key(ec.SECP256R1())
    result = service.enrol(service.create_token("port", "rpi5", device="cam-1"), "port", "cam-1", _csr(key))
    store.close()
    pki, old = tmp_path / "device", tmp_path / "device-day0"
    for folder in (pki, old):
        folder.mkdir()
        (folder / "ca.crt").write_text(result.ca)
        (folder / "device.crt").write_text(result.certificate)
        (folder / "device.key").write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
        )  # fmt: skip
    hub_url = f"http://127.0.0.1:{http_port}"
    (pki / "broker.json").write_text(json.dumps({"host": "localhost", "port": tls_port, "hub": hub_url}))
    broker_cert0 = (state.pki / "broker.crt").read_bytes()

    # Day 760: the hub runs (65 days left on the broker's and the device's certificates).
    env = {"VIGIE_HUB_STATE_DIR": str(state.folder), "VIGIE_HUB_TLS_PORT": str(tls_port),
           "VIGIE_HUB_LOCAL_PORT": str(local_port), "VIGIE_HUB_TLS_BIND": "127.0.0.1",
           "VIGIE_HUB_BROKER_HOST": "localhost", "VIGIE_HUB_BROKER_USER": "root",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    serve = cli("hub", "serve", "--no-ingest", "--db", str(db), "--port", str(http_port))
    log = (tmp_path / "hub.log").open("wb")
    hub = subprocess.Popen(["faketime", "-f", "+760d", *serve], env={**os.environ, **env}, stdout=log,
                           stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        assert wait_for_port(http_port, timeout=60), (tmp_path / "hub.log").read_text()
        deadline = time.monotonic() + 20
        while (state.pki / "broker.crt").read_bytes() == broker_cert0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (state.pki / "broker.crt").read_bytes() != broker_cert0, "the hub did not renew the broker's"
        renewed = _at(760, sys.executable, "-c", _RENEW, str(pki))  # the agent's daily check
        assert renewed.stdout.strip() == "renewed", renewed.stdout + renewed.stderr
    finally:
        os.killpg(hub.pid, signal.SIGTERM)
        hub.wait(timeout=30)
        log.close()
    not_after = x509.load_pem_x509_certificate(
        (pki / "device.crt").read_bytes()
    ).not_valid_after_utc.timestamp()
    assert not_after > time.time() + 1500 * DAY  # 760 + 825 days from now
    broker_cert = x509.load_pem_x509_certificate((state.pki / "broker.crt").read_bytes())
    assert broker_cert.not_valid_after_utc.timestamp() > time.time() + 1500 * DAY
    assert not broker_cert_due(DeviceCA.load(state.pki), time.time() + 830 * DAY)

    # Day 830: the hub's check keeps the CRL valid (as on day 31); the broker runs on that day.
    refresh = (
        "from pathlib import Path; from hub.crl_refresh import CrlRefresher; "
        "from hub.enrolment import HubState; from hub.pki import DeviceCA; "
        "from hub.storage import open_store; "
        f"s = HubState(Path({str(state.folder)!r}), tls_port={tls_port}, tls_bind='127.0.0.1', "
        f"local_port={local_port}, broker_user='root'); "
        f"assert CrlRefresher(open_store({str(db)!r}), DeviceCA.load(s.pki), s.layout).run_once()"
    )
    done = _at(830, sys.executable, "-c", refresh)
    assert done.returncode == 0, done.stderr
    conf = state.layout.folder / "mosquitto.conf"
    broker = subprocess.Popen(["faketime", "-f", "+830d", mosquitto or "mosquitto", "-c", str(conf)],
                              stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        assert wait_for_port(tls_port)
        assert _connects(830, pki, tls_port) == "accepted"  # no human action since day 0
        assert _connects(830, old, tls_port).startswith("refused")  # the day-0 certificate: expired
    finally:
        os.killpg(broker.pid, signal.SIGTERM)
        _, err = broker.communicate(timeout=10)
    assert b"certificate verify failed" in err, err  # the refusal was the broker's check of the old one


@pytest.mark.e2e
def test_the_agents_renewal_thread_and_its_link_take_the_new_certificate(tmp_path: Path) -> None:
    """The renewal thread gets a new certificate from a running hub; after the broker restarts, the
    link connects with it without an agent restart (the old one is in the CRL by then)."""
    from edge.cert_renewal import CertRenewer
    from edge.link import MqttLink
    from edge.outbox import Outbox
    from vigie.mqtt import BrokerConfig

    mosquitto = find_mosquitto()
    need_service(mosquitto is not None, "mosquitto")
    tls_port, local_port, http_port = free_port(), free_port(), free_port()
    state = HubState(tmp_path / "state", tls_port=tls_port, tls_bind="127.0.0.1", local_port=local_port,
                     broker_user="root")  # fmt: skip
    state.init(["localhost"])
    db = tmp_path / "hub.sqlite"
    store = SQLiteStore(db)
    service = EnrolmentService(store, state)
    key = ec.generate_private_key(ec.SECP256R1())
    result = service.enrol(service.create_token("port", "rpi5", device="cam-1"), "port", "cam-1", _csr(key))
    store.close()
    pki = tmp_path / "device"
    pki.mkdir()
    (pki / "ca.crt").write_text(result.ca)
    (pki / "device.crt").write_text(result.certificate)
    (pki / "device.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    )  # fmt: skip
    hub_url = f"http://127.0.0.1:{http_port}"
    (pki / "broker.json").write_text(json.dumps({"host": "localhost", "port": tls_port, "hub": hub_url}))
    env = {**os.environ, "VIGIE_HUB_STATE_DIR": str(state.folder), "VIGIE_HUB_TLS_PORT": str(tls_port),
           "VIGIE_HUB_LOCAL_PORT": str(local_port), "VIGIE_HUB_TLS_BIND": "127.0.0.1",
           "VIGIE_HUB_BROKER_USER": "root"}  # fmt: skip
    serve = cli("hub", "serve", "--no-ingest", "--db", str(db), "--port", str(http_port))
    hub = subprocess.Popen(serve, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conf = str(state.layout.folder / "mosquitto.conf")
    brokers = [subprocess.Popen([mosquitto or "mosquitto", "-c", conf], stderr=subprocess.DEVNULL)]
    broker = BrokerConfig(host="localhost", port=tls_port).with_tls_dir(pki)
    link = MqttLink(broker, Outbox(tmp_path / "o.sqlite"), site="port", device="cam-1")
    renewer = CertRenewer(pki, hub_url, before_s=900 * DAY)  # due at once: the 825-day certificate is new
    try:
        assert wait_for_port(http_port, timeout=30)
        assert wait_for_port(tls_port, timeout=10)
        link.start()
        _wait(lambda: link.connected, "the link connects with the enrolment certificate")
        old = _serial((pki / "device.crt").read_bytes())
        renewer.start()
        _wait(lambda: _serial((pki / "device.crt").read_bytes()) != old, "the renewal thread renews")
        # The old certificate revoked, the broker restarted: only the renewed certificate gets in.
        DeviceCA.load(state.pki).write_crl([(int(old, 16), time.time())])
        brokers[0].terminate()
        brokers[0].wait(timeout=10)
        _wait(lambda: not link.connected, "the link sees the broker go")
        brokers.append(subprocess.Popen([mosquitto or "mosquitto", "-c", conf], stderr=subprocess.DEVNULL))
        assert wait_for_port(tls_port, timeout=10)
        _wait(lambda: link.connected, "the link reconnects with the renewed certificate", timeout=40)
    finally:
        renewer.stop()
        link.stop()
        for b in brokers:
            if b.poll() is None:
                b.terminate()
                b.wait(timeout=10)
        hub.terminate()
        hub.wait(timeout=20)


def _wait(ok: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)
