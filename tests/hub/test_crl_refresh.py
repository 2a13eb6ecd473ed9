"""The revocation list is rewritten on a schedule, long before it expires (issue 21: day 31)."""

from __future__ import annotations

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

from edge.link import MqttLink
from edge.outbox import Outbox
from hub.crl_refresh import CrlRefresher, crl_due
from hub.enrolment import EnrolmentService, HubState
from hub.storage import SQLiteStore
from tests.conftest import need_service
from tests.hub.test_enrolment import _csr, _tls_client
from vigie.broker import find_mosquitto
from vigie.mqtt import BrokerConfig
from vigie.netutil import free_port, wait_for_port

DAY = 86400.0


def _next_update(path: Path) -> float:
    nxt = x509.load_pem_x509_crl(path.read_bytes()).next_update_utc
    assert nxt is not None
    return nxt.timestamp()


def _accepted(outcome: dict[str, Any]) -> bool:
    """A CONNACK that is not a failure (a refused certificate ends the TLS session before any)."""
    return "reason" in outcome and not outcome["reason"].is_failure


def test_crl_due_only_when_validity_runs_low() -> None:
    now = 1_000_000.0
    assert crl_due(None, now, 23 * DAY)  # missing or unreadable
    assert not crl_due(now + 29 * DAY, now, 23 * DAY)
    assert crl_due(now + 22 * DAY, now, 23 * DAY)
    assert crl_due(now - DAY, now, 23 * DAY)  # expired already


def test_a_low_crl_is_rewritten_with_the_revoked_serials_kept(store: Any, tmp_path: Path) -> None:
    state = HubState(tmp_path / "state")
    state.init(["localhost"])
    service = EnrolmentService(store, state)
    token = service.create_token("lyon", "rpi5", device="cam-1")
    service.enrol(token, "lyon", "cam-1", _csr())
    service.revoke("lyon", "cam-1")
    crl_path = state.pki / "crl.pem"
    service.ca.write_crl([(int(store.list_revoked()[0][0], 16), time.time())], days=5)  # a quiet month
    job = CrlRefresher(store, service.ca, state.layout)
    assert not job.run_once(now=time.time() - 30 * DAY)  # 35 days left then: nothing to do
    assert job.run_once()
    assert _next_update(crl_path) > time.time() + 29 * DAY
    revoked = x509.load_pem_x509_crl(crl_path.read_bytes())
    assert len(list(revoked)) == 1  # the revoked device stays revoked
    assert not job.run_once()  # fresh now: not rewritten at every check


@pytest.mark.e2e
def test_devices_still_connect_on_day_31_once_the_hub_refreshed_the_crl(tmp_path: Path) -> None:
    """libfaketime: the broker and the hub at day 31 of a hub that saw no enrolment or revocation."""
    mosquitto = find_mosquitto()
    need_service(mosquitto is not None and shutil.which("faketime") is not None, "mosquitto and faketime")
    tls_port, local_port = free_port(), free_port()
    state = HubState(tmp_path / "state", tls_port=tls_port, tls_bind="127.0.0.1", local_port=local_port,
                     broker_user="root")  # fmt: skip
    state.init(["localhost"])
    store = SQLiteStore(tmp_path / "hub.sqlite")
    service = EnrolmentService(store, state)
    key = ec.generate_private_key(ec.SECP256R1())
    result = service.enrol(service.create_token("port", "rpi5", device="cam-1"), "port", "cam-1", _csr(key))
    pki = tmp_path / "device"
    pki.mkdir()
    (pki / "ca.crt").write_text(result.ca)
    (pki / "device.crt").write_text(result.certificate)
    (pki / "device.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    )  # fmt: skip
    store.close()
    day31 = ["faketime", "-f", "+31d"]
    conf = state.layout.folder / "mosquitto.conf"
    broker = subprocess.Popen(
        [*day31, mosquitto or "mosquitto", "-c", str(conf)], stderr=subprocess.PIPE, start_new_session=True
    )
    clients = []
    links: list[MqttLink] = []
    try:
        assert wait_for_port(tls_port)
        refused, outcome = _tls_client(pki, tls_port)  # the CRL written on day 0 has expired
        clients.append(refused)
        assert not _accepted(outcome), outcome
        # An agent's link says why, in words (edge/troubles.py), instead of retrying in silence.
        link = MqttLink(BrokerConfig(host="localhost", port=tls_port).with_tls_dir(pki),
                        Outbox(tmp_path / "o.sqlite"), site="port", device="cam-1")  # fmt: skip
        link.start()
        links.append(link)
        deadline = time.monotonic() + 15
        while "certificate" not in link.troubles.active() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "revoked or expired" in link.troubles.active()["certificate"]["cause"]
        # The running hub's check at day 31 (run here as one call under the same fake clock).
        refresh = (
            "from pathlib import Path; from hub.crl_refresh import CrlRefresher; "
            "from hub.enrolment import HubState; from hub.pki import DeviceCA; "
            "from hub.storage import open_store; "
            f"s = HubState(Path({str(state.folder)!r}), tls_port={tls_port}, tls_bind='127.0.0.1', "
            f"local_port={local_port}, broker_user='root'); "
            f"assert CrlRefresher(open_store({str(tmp_path / 'hub.sqlite')!r}), DeviceCA.load(s.pki), "
            "s.layout).run_once()"
        )
        done = subprocess.run(
            [*day31, sys.executable, "-c", refresh], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            client, outcome = _tls_client(pki, tls_port)
            clients.append(client)
            if _accepted(outcome):
                break
            time.sleep(0.5)
        # Same broker, same day-31 clock: the refreshed CRL was all it took.
        assert _accepted(outcome), outcome
        deadline = time.monotonic() + 30  # the link's next retry (1, 2, 4... s)
        while not link.connected and time.monotonic() < deadline:
            time.sleep(0.2)
        assert link.connected
        assert link.troubles.active() == {}
    finally:
        for lk in links:
            lk.stop()
        for c in clients:
            c.loop_stop()
            c.disconnect()
        # faketime runs mosquitto as its child: stop the whole group.
        os.killpg(broker.pid, signal.SIGTERM)
        _, err = broker.communicate(timeout=10)
    # Refused at the handshake before (same certificates: only the CRL changed), reloaded, accepted.
    assert b"certificate verify failed" in err, err
    assert b"Reloading config" in err, err
