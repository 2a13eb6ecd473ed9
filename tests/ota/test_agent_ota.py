"""OTA campaign commands on the agent's own MQTT connection (one identity, one client id).

A real Mosquitto as the demo runs it (passwords, the production ACL, `use_username_as_clientid`):
the broker binds each client id to its username, so two processes under one device's identity
get the same id and the broker disconnects them in turn. The agent (`vigie edge run --ota-dir
--ota-repo`) takes a campaign's command itself, installs through TUF and the A/B slots, reloads
onto the new model and reports; it is never disconnected meanwhile. The old way, an
`ota-listen` beside the agent under the same identity, is shown failing exactly so.
"""

from __future__ import annotations

import functools
import http.server
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from edge.agent import Agent
from edge.agent_ota import ota_repo, reload_onto_live_slot
from edge.config import AgentConfig
from edge.ota.updater import ModelUpdater
from hub.storage import SQLiteStore
from ota.bundle import pack
from ota.repository import init_repository
from tests.conftest import cli, need_service
from tests.ota.test_ota import LABELS, MODEL, Repo, _manifest, _Quiet
from vigie.broker import LocalBroker, find_mosquitto, start_broker
from vigie.demo import HUB_USER, BrokerAuth, broker_auth
from vigie.mqtt import BrokerConfig
from vigie.netutil import free_port

DEVICE = "demo/cam-1"  # broker_auth names its cameras demo/cam-N


@pytest.fixture
def demo_broker(tmp_path: Path) -> Iterator[tuple[LocalBroker, BrokerAuth]]:
    need_service(find_mosquitto() is not None, "mosquitto")
    auth = broker_auth(tmp_path, agents=1)
    broker = start_broker(
        tmp_path / "broker", free_port(), password_file=auth.password_file, acl_file=auth.acl_file
    )
    try:
        yield broker, auth
    finally:
        broker.stop()


@pytest.fixture
def served_repo(tmp_path: Path) -> Iterator[Repo]:
    """A TUF repository over real HTTP, as the hub serves it at /ota."""
    folder = tmp_path / "repo"
    init_repository(folder)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "bundles").mkdir()
    try:
        yield Repo(folder, f"http://127.0.0.1:{server.server_address[1]}", tmp_path / "bundles")
    finally:
        server.shutdown()


def test_the_repository_comes_from_the_setting_else_from_enrolment(tmp_path: Path) -> None:
    base = {"site": "demo", "device": "cam-1", "source": "x.avi", "ota_dir": tmp_path / "ota"}
    assert ota_repo(AgentConfig.model_validate(base)) is None  # no TLS, no setting: OTA commands off
    pki = tmp_path / "pki"
    pki.mkdir()
    (pki / "broker.json").write_text('{"host": "hub", "port": 8883, "hub": "https://hub.city.example/"}')
    enrolled = {**base, "broker": BrokerConfig().with_tls_dir(pki)}
    assert ota_repo(AgentConfig.model_validate(enrolled)) == "https://hub.city.example/ota"
    given = {**enrolled, "ota_repo": "http://127.0.0.1:8000/ota"}
    assert ota_repo(AgentConfig.model_validate(given)) == "http://127.0.0.1:8000/ota"  # the setting wins
    with pytest.raises(ValidationError, match="ota_repo"):
        AgentConfig.model_validate({**base, "ota_repo": "hub.city.example/ota"})


def _device_folder(tmp_path: Path, repo: Repo, model_dir: Path) -> Path:
    """The device's OTA folder: the repository's root trusted, 1.0.0 live."""
    ota = tmp_path / "ota"
    (ota / "metadata").mkdir(parents=True)
    (ota / "metadata" / "root.json").write_bytes((repo.folder / "metadata" / "root.json").read_bytes())
    first = repo.bundles / "first.tar"
    pack(model_dir / MODEL, model_dir / LABELS, _manifest("1.0.0"), first)
    ModelUpdater(ota, repo.url).install_initial(first)
    return ota


def test_the_worker_waits_for_the_frame_loop_to_run_the_new_slot(
    served_repo: Repo, model_dir: Path, bus_jpg: Path, tmp_path: Path
) -> None:
    """After a switch the OTA worker asks the frame loop to reload; no reload in time: a failed update."""
    ota = _device_folder(tmp_path, served_repo, model_dir)
    config = AgentConfig.model_validate({
        "site": "demo", "device": "cam-1", "source": str(bus_jpg), "model_dir": model_dir, "ota_dir": ota,
        "ota_repo": served_repo.url, "outbox": tmp_path / "outbox.sqlite",
        "broker": BrokerConfig(port=free_port()),  # never connected: the link is not started
    })  # fmt: skip
    agent = Agent(config)  # not run: this test plays the frame loop
    try:
        assert agent.ota is not None  # OTA folder and repository: commands taken
        new = served_repo.make("1.1.0", model_dir / MODEL, model_dir / LABELS)
        ModelUpdater(ota, served_repo.url).update(new.target_name)
        assert not reload_onto_live_slot(agent, timeout_s=0.5)  # nobody reloaded: the caller reverts
        assert agent.control.reload.is_set()

        def frame_loop() -> None:
            agent.control.reload.wait(5)
            time.sleep(0.3)
            agent.reload()

        loop = threading.Thread(target=frame_loop)
        loop.start()
        assert reload_onto_live_slot(agent, timeout_s=10)
        loop.join()
        assert agent.pipeline.detector.model_ref == "ssd-coco@1.1.0"
    finally:
        agent.source.close()
        agent.outbox.close()


def _agent(
    tmp_path: Path, broker: LocalBroker, auth: BrokerAuth, ota: Path, video: Path, *extra: str
) -> list[str]:
    return cli(
        "--log-format", "json", "edge", "run", "--site", "demo", "--device", "cam-1", "--source", str(video),
        "--loop", "--realtime", "--fps-cap", "2", "--threads", "1", "--window", "10", "--ota-dir", str(ota),
        "--broker", f"127.0.0.1:{broker.port}", "--mqtt-username", DEVICE,
        "--mqtt-password-file", str(auth.password_files[DEVICE]), "--outbox", str(tmp_path / "outbox.sqlite"),
        *extra,
    )  # fmt: skip


def _wait_for(path: Path, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        seen = path.read_text() if path.exists() else ""
        if text in seen:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in {path.name} within {timeout} s: {seen[-2000:]}")


@pytest.mark.e2e
def test_the_agent_takes_a_campaign_on_its_own_connection_and_is_never_disconnected(
    demo_broker: tuple[LocalBroker, BrokerAuth], served_repo: Repo, model_dir: Path, vtest_avi: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    broker, auth = demo_broker
    ota = _device_folder(tmp_path, served_repo, model_dir)
    new = served_repo.make("1.1.0", model_dir / MODEL, model_dir / LABELS)
    log = tmp_path / "agent.log"
    with log.open("wb") as fh:
        agent = subprocess.Popen(
            _agent(tmp_path, broker, auth, ota, vtest_avi, "--ota-repo", served_repo.url),
            stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_for(log, "connected to broker", 60)
        assert "OTA campaign commands taken on the agent's connection" in log.read_text()
        SQLiteStore(tmp_path / "hub.sqlite").close()  # the hub's store, where campaigns live
        hub = ["--broker", f"127.0.0.1:{broker.port}", "--mqtt-username", HUB_USER,
               "--mqtt-password-file", str(auth.password_files[HUB_USER])]  # fmt: skip
        run = subprocess.run(
            cli("ota", "campaign", "create", "--name", "c-own-link", "--target", new.target_name,
                "--version", "1.1.0", "--devices", DEVICE, "--waves", "1", "--wave-timeout", "90",
                "--db", str(tmp_path / "hub.sqlite"), *hub, "--run"),
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr + log.read_text()[-3000:]
        assert "c-own-link: done, 1/1 installed, 0 failed" in run.stdout
        manifest = ModelUpdater(ota, served_repo.url).current_manifest()
        assert manifest is not None
        assert manifest.version == "1.1.0"
        text = _wait_for(log, "ssd-coco@1.1.0", 30)  # the agent reloaded onto the new slot
        time.sleep(2.0)  # frames go on through the new model, on the same connection
        assert agent.poll() is None, log.read_text()[-3000:]
        text = log.read_text()
    finally:
        agent.terminate()
        agent.wait(timeout=30)
    assert text.count("connected to broker") == 1, text  # one connection, never taken over
    assert "broker connection lost" not in text, text
    broker_log = broker.log_path.read_text()
    assert broker_log.count(f"as {DEVICE} ") == 1, broker_log  # one connection under the identity
    assert "already connected" not in broker_log, broker_log


@pytest.mark.e2e
def test_a_listener_beside_the_agent_under_one_identity_is_fought_off(
    demo_broker: tuple[LocalBroker, BrokerAuth], served_repo: Repo, model_dir: Path, vtest_avi: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Why `ota-listen` must not run beside the agent: the broker gives both the same client id."""
    broker, auth = demo_broker
    ota = _device_folder(tmp_path, served_repo, model_dir)
    log = tmp_path / "agent.log"
    procs = []
    try:
        with log.open("wb") as fh:
            procs.append(subprocess.Popen(_agent(tmp_path, broker, auth, ota, vtest_avi),
                                          stdout=fh, stderr=subprocess.STDOUT))  # fmt: skip
        _wait_for(log, "connected to broker", 60)
        listen = cli("edge", "ota-listen", "--site", "demo", "--device", "cam-1", "--repo", served_repo.url,
                     "--ota-dir", str(ota), "--broker", f"127.0.0.1:{broker.port}", "--mqtt-username", DEVICE,
                     "--mqtt-password-file", str(auth.password_files[DEVICE]))  # fmt: skip
        procs.append(subprocess.Popen(listen, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        text = _wait_for(log, "broker connection lost", 30)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
    assert "OTA campaign commands not taken" in text  # no repository given: the agent leaves OTA alone
    assert f"Client {DEVICE} already connected, closing old connection" in broker.log_path.read_text()
