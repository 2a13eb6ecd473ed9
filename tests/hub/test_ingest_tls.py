"""The ingest receiver over TLS, against a real Mosquitto with a TLS listener (and a plain one beside it).

Certificates come from the hub's own CA helpers (:mod:`hub.pki`): the broker's
for ``localhost``/``127.0.0.1``, and a client certificate the listener requires.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge.enrol import make_csr
from hub.ingest import Ingestor
from hub.pki import DeviceCA
from hub.storage import SQLiteStore
from tests.conftest import cli, need_service
from tests.test_wire import event
from vigie import wire
from vigie.broker import find_mosquitto
from vigie.exceptions import ConfigError
from vigie.mqtt import BrokerConfig
from vigie.netutil import free_port, wait_for_port


def _event(**overrides: Any) -> Any:
    """A valid event counted with the hub's minimum k (3): a smaller k would be quarantined."""
    fields: dict[str, Any] = {"k": 3, "counts": {"person": 4}, "mean_counts": {"person": 2.5}}
    return event(**{**fields, **overrides})


@dataclass
class TlsBroker:
    tls_port: int
    plain_port: int
    pki: Path  # ca.crt, device.crt, device.key: what `--mqtt-tls-dir` expects


def _client_pair(ca: DeviceCA, folder: Path, name: str) -> None:
    folder.mkdir(parents=True)
    key = ec.generate_private_key(ec.SECP256R1())
    issued = ca.sign_csr(make_csr(key, "hub", name), "hub", name)
    shutil.copy(ca.folder / "ca.crt", folder / "ca.crt")
    (folder / "device.crt").write_bytes(issued.pem)
    (folder / "device.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    need_service(find_mosquitto() is not None, "mosquitto")
    ca = DeviceCA.init(tmp_path / "ca", broker_hosts=["localhost", "127.0.0.1"])
    _client_pair(ca, tmp_path / "pki", "ingest")
    tls_port, plain_port = free_port(), free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        ("user root\n" if os.geteuid() == 0 else "")  # our own short-lived broker: keep our user
        + "allow_anonymous true\n"
        f"log_dest file {tmp_path / 'broker.log'}\n"
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {ca.folder / 'ca.crt'}\n"
        f"certfile {ca.folder / 'broker.crt'}\nkeyfile {ca.folder / 'broker.key'}\n"
        "require_certificate true\n"
        f"listener {plain_port} 127.0.0.1\n"
    )
    proc = subprocess.Popen([find_mosquitto() or "mosquitto", "-c", str(conf)], stderr=subprocess.PIPE)
    try:
        assert wait_for_port(tls_port), proc.stderr
        assert wait_for_port(plain_port), proc.stderr
        yield TlsBroker(tls_port, plain_port, tmp_path / "pki")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _publish_over_tls(b: TlsBroker, events: list[wire.ZoneCountEvent]) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{time.time_ns()}")
    client.tls_set(
        ca_certs=str(b.pki / "ca.crt"), certfile=str(b.pki / "device.crt"), keyfile=str(b.pki / "device.key")
    )
    client.connect("localhost", b.tls_port)
    client.loop_start()
    try:
        for e in events:
            topic = wire.topic(e.site, e.device, wire.Channel.EVENT)
            client.publish(topic, wire.encode(e), qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s")


def test_ingest_connects_over_tls_and_stores_what_was_published_over_tls(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    store = SQLiteStore(tmp_path / "hub.sqlite")
    config = BrokerConfig(host="localhost", port=tls_broker.tls_port).with_tls_dir(tls_broker.pki)
    ingestor = Ingestor(config, store, client_id="tls-ingest", batch_delay_s=0.05)
    ingestor.start()
    try:
        assert ingestor.wait_connected(15), ingestor.stats.last_error
        _publish_over_tls(tls_broker, [_event(), _event(device="cam-02")])
        _wait(lambda: store.count_events() == 2, 15, "both events stored")
        assert ingestor.stats.stored == 2
    finally:
        ingestor.stop()
        store.close()


@pytest.mark.parametrize("case", ["plain listener", "another CA"])
def test_a_handshake_that_fails_is_a_clear_error_and_never_connected(
    tls_broker: TlsBroker, tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    pki = tls_broker.pki
    port = tls_broker.plain_port if case == "plain listener" else tls_broker.tls_port
    if case == "another CA":  # a CA that did not sign the broker's certificate
        _client_pair(DeviceCA.init(tmp_path / "other-ca"), tmp_path / "other", "ingest")
        pki = tmp_path / "other"
    store = SQLiteStore(tmp_path / "hub.sqlite")
    config = BrokerConfig(host="localhost", port=port).with_tls_dir(pki)
    ingestor = Ingestor(config, store, client_id="tls-ingest")
    caplog.set_level(logging.WARNING, logger="hub.ingest")
    ingestor.start()
    try:
        assert not ingestor.wait_connected(3)
        error = ingestor.stats.last_error or ""
        if case == "plain listener":
            assert f"TLS handshake with localhost:{port} failed" in error
            assert "is this a TLS listener?" in error
        else:
            assert f"TLS with localhost:{port}: the broker's certificate was refused" in error
        assert any(getattr(r, "reason", None) == error for r in caplog.records), caplog.records
        # What /healthz reads for separate ingest processes: this worker, not connected, and why.
        (row,) = store.list_ingest_status()
        assert (row["worker"], row["connected"], row["last_error"]) == ("tls-ingest", False, error)
    finally:
        ingestor.stop()
        store.close()


def test_tls_settings_that_cannot_be_honoured_are_start_up_errors(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    store = SQLiteStore(tmp_path / "hub.sqlite")
    try:
        missing = tmp_path / "nowhere"
        with pytest.raises(ConfigError, match=f"CA certificate {missing}/ca.crt: its folder does not exist"):
            Ingestor(BrokerConfig(port=tls_broker.tls_port).with_tls_dir(missing), store)
        mixed = tmp_path / "mixed"
        shutil.copytree(tls_broker.pki, mixed)
        ec_key = ec.generate_private_key(ec.SECP256R1())
        (mixed / "device.key").write_bytes(
            ec_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        with pytest.raises(ConfigError, match=f"client key {mixed}/device.key does not go with certificate"):
            Ingestor(BrokerConfig(port=tls_broker.tls_port).with_tls_dir(mixed), store)
        (mixed / "ca.crt").write_text("not a certificate\n")
        with pytest.raises(ConfigError, match=f"CA certificate {mixed}/ca.crt: not a PEM certificate"):
            Ingestor(BrokerConfig(port=tls_broker.tls_port).with_tls_dir(mixed), store)
    finally:
        store.close()
    # The command says so before spawning anything, without a traceback.
    for workers in ("1", "2"):
        done = subprocess.run(
            cli("hub", "ingest", "--db", str(tmp_path / "cli.sqlite"),
                "--broker", f"localhost:{tls_broker.tls_port}", "--mqtt-tls-dir", str(missing),
                "--workers", workers),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert (
            f"vigie: error: MQTT TLS CA certificate {missing}/ca.crt: its folder does not exist"
            in done.stderr
        )
        assert "Traceback" not in done.stderr


def test_spawned_workers_connect_over_tls(tls_broker: TlsBroker, tmp_path: Path) -> None:
    db = tmp_path / "hub.sqlite"
    store = SQLiteStore(db)
    proc = subprocess.Popen(
        cli("hub", "ingest", "--db", str(db), "--broker", f"localhost:{tls_broker.tls_port}",
            "--mqtt-tls-dir", str(tls_broker.pki), "--workers", "2", "--group", "tls"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait(
            lambda: sum(r["connected"] for r in store.list_ingest_status()) == 2, 30, "both workers connected"
        )
        rows = store.list_ingest_status()
        assert sorted(r["worker"] for r in rows) == ["vigie-hub-ingest-0", "vigie-hub-ingest-1"]
        events = [_event(device=f"cam-{i:02d}") for i in range(20)]
        _publish_over_tls(tls_broker, events)
        _wait(lambda: store.count_events() == 20, 30, "every event stored")
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
        store.close()
    assert proc.returncode == 0, out.decode()


def _healthz(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return answer


@pytest.mark.parametrize("listener", ["tls", "plain"])
def test_hub_serve_passes_tls_to_its_ingest_workers_and_healthz_tells(
    tls_broker: TlsBroker, tmp_path: Path, listener: str
) -> None:
    """`hub serve --ingest-workers 2`: the spawned workers speak TLS; against a plain listener, degraded."""
    port = free_port()
    broker_port = tls_broker.tls_port if listener == "tls" else tls_broker.plain_port
    log = (tmp_path / "hub.log").open("wb")
    # Its own process group: the spawned ingest processes are stopped with it, whatever happens.
    proc = subprocess.Popen(
        cli("hub", "serve", "--port", str(port), "--db", str(tmp_path / "hub.sqlite"),
            "--ingest-workers", "2", "--broker", f"localhost:{broker_port}",
            "--mqtt-tls-dir", str(tls_broker.pki)),
        env={**os.environ, "VIGIE_HUB_AUTH": "off"}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert wait_for_port(port, timeout=30)
        health = _wait(lambda: (h := _healthz(port))["ingest"] and len(h["ingest"]["workers"]) == 2 and h, 30,
                       "two ingest workers reporting")  # fmt: skip
        if listener == "tls":
            health = _wait(lambda: (h := _healthz(port))["status"] == "ok" and h, 30, "status ok")
            assert all(w["connected"] for w in health["ingest"]["workers"])
        else:
            time.sleep(1.0)
            health = _healthz(port)
            assert health["status"] == "degraded"
            for w in health["ingest"]["workers"]:
                assert not w["connected"]
                assert f"localhost:{broker_port} failed" in w["last_error"]
                assert "is this a TLS listener?" in w["last_error"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
