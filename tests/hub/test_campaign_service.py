"""Campaigns run by the hub (issue 21): two `vigie hub serve` processes under uvicorn on one store,
one runner per campaign by lease, a takeover when the holder is killed, crash loops at the gate,
operators' actions through the API (roles, audit) and the CLI as the API's client.

Longer than 400 lines because the end-to-end tests share one fake fleet and one two-hub fixture,
which would otherwise be imported across test modules.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from hub.auth import hash_password, issue_token, token_hash
from hub.campaign_lease import lease_holder, merge_reports, take_lease
from hub.campaign_select import Selector, select_devices
from hub.storage import open_store
from ota.rollout import DeviceOutcome, GatePolicy, crash_looping, evaluate_gate
from tests.conftest import PG_DSN, cli, need_service, postgres_available
from vigie import wire
from vigie.broker import LocalBroker
from vigie.exceptions import WireError
from vigie.mqtt import BrokerConfig, make_client
from vigie.netutil import free_port, wait_for_port

NORTH = [f"north/cam-{i}" for i in range(10)]
SOUTH = ["south/cam-0", "south/cam-1"]


# -- pure parts ---------------------------------------------------------------------------------------
def test_the_lease_goes_to_one_holder_until_it_lapses() -> None:
    doc: Any = {"lease": None}
    lease = take_lease(doc, "a", 100.0, 15)
    assert lease is not None
    assert lease["holder"] == "a"
    assert lease["until"] == 115.0
    doc["lease"] = lease
    assert lease_holder(doc, 110.0) == "a"
    assert take_lease(doc, "b", 110.0, 15) is None  # held: refused
    renewed = take_lease(doc, "a", 110.0, 15)
    assert renewed is not None
    assert renewed["until"] == 125.0
    assert renewed["since"] == 100.0
    assert lease_holder(doc, 115.0) is None  # lapsed
    taken = take_lease(doc, "b", 115.0, 15)
    assert taken is not None
    assert taken["holder"] == "b"
    assert taken["since"] == 115.0


def test_restarts_on_the_new_model_are_counted_and_halt_the_gate() -> None:
    installed = {"step": "installed", "at": 10.0, "latency_ms": 20.0}
    merged = merge_reports({}, {"s/a": installed, "s/b": installed}, {}, "1.1.0")
    beats = {
        # a: restarts twice on 1.1.0 (uptime falls back), once on the old model (not counted)
        "s/a": [(50, "m@1.0.0"), (3, "m@1.0.0"), (4, "m@1.1.0"), (9, "m@1.1.0"), (2, "m@1.1.0"),
                (1, "m@1.1.0")],
        "s/b": [(40, "m@1.1.0"), (45, "m@1.1.0")],
    }  # fmt: skip
    merged = merge_reports(merged, {}, beats, "1.1.0")
    assert (merged["s/a"]["restarts"], merged["s/b"]["restarts"]) == (2, 0)
    # the same report seen again (a retained message after a takeover) keeps its first time
    again = merge_reports(merged, {"s/a": {**installed, "at": 99.0}}, {"s/a": [(0, "m@1.1.0")]}, "1.1.0")
    assert again["s/a"]["at"] == 10.0
    assert again["s/a"]["restarts"] == 3
    outcomes = {
        d: DeviceOutcome(o["step"], o["latency_ms"], o["at"], None, o["restarts"]) for d, o in again.items()
    }
    policy = GatePolicy(max_restarts=2)
    assert crash_looping(["s/a", "s/b"], outcomes, policy) == ["s/a"]
    decision = evaluate_gate(["s/a", "s/b"], outcomes, policy, started=0, now=20)
    assert decision.verdict == "halt", decision
    assert "crash-looping" in decision.reason, decision
    assert evaluate_gate(["s/b"], outcomes, policy, started=0, now=20).verdict == "pass"
    assert evaluate_gate(["s/b"], outcomes, GatePolicy(soak_s=30), started=0, now=20).verdict == "wait"
    assert (
        evaluate_gate(["s/a"], outcomes, GatePolicy(max_restarts=None), started=0, now=20).verdict == "pass"
    )


def test_selectors_by_site_profile_and_model() -> None:
    enrolled = [
        {"site": "north", "device": "a", "profile": "rpi5", "revoked_at": None},
        {"site": "north", "device": "b", "profile": "rpi4", "revoked_at": None},
        {"site": "north", "device": "c", "profile": "rpi5", "revoked_at": 5.0},
        {"site": "south", "device": "a", "profile": "rpi5", "revoked_at": None},
    ]
    seen = [
        {"site": "north", "device": "a", "heartbeat": {"model": "ssd@1.0.0"}},
        {"site": "north", "device": "b", "heartbeat": {"model": "yolo@2.0.0"}},
        {"site": "south", "device": "a", "heartbeat": None},
    ]
    assert select_devices(enrolled, seen, Selector()) == ["north/a", "north/b", "south/a"]  # revoked: never
    assert select_devices(enrolled, seen, Selector(sites=["north"])) == ["north/a", "north/b"]
    assert select_devices(enrolled, seen, Selector(profiles=["rpi5"])) == ["north/a", "south/a"]
    assert select_devices(enrolled, seen, Selector(models=["ssd"])) == ["north/a"]
    assert select_devices(enrolled, seen, Selector(models=["yolo@2.0.0", "ssd@9.9.9"])) == ["north/b"]
    assert select_devices(enrolled, seen, Selector(devices=["north/a", "north/c", "x/y"])) == ["north/a"]
    tags = {"north/b": ["pilot"], "south/a": ["pilot", "night"], "north/c": ["pilot"]}
    assert select_devices(enrolled, seen, Selector(tags=["pilot"]), tags) == ["north/b", "south/a"]
    assert select_devices(enrolled, seen, Selector(tags=["night", "x"], sites=["south"]), tags) == ["south/a"]
    assert select_devices(enrolled, seen, Selector(tags=["pilot"], profiles=["rpi5"]), tags) == ["south/a"]


# -- a fleet of fake devices on the broker --------------------------------------------------------------
class Fleet:
    """Devices as the hub sees them: OTA commands in; retained `ota_state` and heartbeats out.

    Each device answers `installed` ``answer_s`` after an install; a device for which ``crashes``
    says so restarts its agent in a loop on the new model (its heartbeats' uptime keeps falling back).
    """

    def __init__(self, port: int, devices: list[str], *, answer_s: float = 0.5,
                 crashes: Callable[[str], bool] = lambda key: False) -> None:  # fmt: skip
        self.devices, self.answer_s, self.crashes = devices, answer_s, crashes
        self.commands: list[tuple[str, str]] = []
        self.model = {d: "ssd-coco@1.0.0" for d in devices}
        self.looping: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.client = make_client(BrokerConfig(port=port), f"fleet-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, u, f, r, p=None: c.subscribe(
            wire.subscription(wire.Channel.OTA), qos=1
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self._beats = threading.Thread(target=self._heartbeats, daemon=True)
        self._beats.start()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            command = wire.decode(message.payload, wire.Channel.OTA)
        except WireError:
            return
        if not isinstance(command, wire.OtaCommand):
            return
        key = f"{command.site}/{command.device}"
        with self._lock:
            self.commands.append((key, command.action))
        threading.Timer(self.answer_s, self._answer, args=(command,)).start()

    def _answer(self, command: wire.OtaCommand) -> None:
        key = f"{command.site}/{command.device}"
        new = f"ssd-coco@{command.version}" if command.action == "install" else "ssd-coco@1.0.0"
        with self._lock:
            self.model[key] = new
            if command.action == "install" and self.crashes(key):
                self.looping.add(key)
            if command.action == "rollback":
                self.looping.discard(key)
        step = "installed" if command.action == "install" else "rolled_back"
        state = wire.OtaState(site=command.site, device=command.device, ts=int(time.time()),
                              campaign=command.campaign, step=step, model=new, latency_ms=20.0)  # fmt: skip
        topic = wire.topic(command.site, command.device, wire.Channel.OTA_STATE)
        self.client.publish(topic, wire.encode(state), qos=1, retain=True)

    def _heartbeats(self) -> None:
        uptime = dict.fromkeys(self.devices, 100)
        while not self._stop.wait(0.3):
            for key in self.devices:
                with self._lock:
                    looping, model = key in self.looping, self.model[key]
                uptime[key] = (uptime[key] + 1) % 3 if looping else uptime[key] + 1  # a crash loop: 0,1,2,0,…
                site, device = key.split("/")
                now = int(time.time())
                beat = wire.Heartbeat(
                    site=site, device=device, ts=now - now % 10, agent_version="0.1.0", model=model,
                    uptime_s=uptime[key], fps=4.0, inference_p50_ms=17.0, inference_p95_ms=21.0,
                    cpu_percent=30.0, rss_mb=150.0, disk_free_mb=5000.0, outbox_depth=0, outbox_dropped=0,
                )  # fmt: skip
                self.client.publish(
                    wire.topic(site, device, wire.Channel.HEARTBEAT), wire.encode(beat), qos=0
                )

    def installs(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(d for d, action in self.commands if action == "install")

    def stop(self) -> None:
        self._stop.set()
        self.client.loop_stop()
        self.client.disconnect()


# -- hubs ----------------------------------------------------------------------------------------------
@dataclass
class Tokens:
    operator: str
    technician: str


def _prepare_store(db: str) -> Tokens:
    """The store two hubs will share: enrolled devices, an operator and a technician with tokens."""
    store = open_store(db)
    now = time.time()
    for n, key in enumerate(NORTH + SOUTH):
        site, device = key.split("/")
        digest = token_hash(f"enrol-{key}")
        store.add_enrol_token(digest, site, "rpi5", device, now, now + 600)
        store.enrol_device(digest, device, now, lambda s, d, n=n: (f"{n:04x}", "f" * 64, now + 825 * 86400))
    store.add_user("olga", hash_password("operator-password-1"), "operator", now)
    store.add_user("theo", hash_password("technician-pass-1"), "technician", now)
    tokens = Tokens(issue_token(store, "olga", ttl_s=3600)[0], issue_token(store, "theo", ttl_s=3600)[0])
    store.close()
    return tokens


@dataclass
class HubProcess:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def _start_hub(tmp_path: Path, name: str, db: str, broker: LocalBroker, lease_s: float) -> HubProcess:
    port = free_port()
    log = tmp_path / f"{name}.log"
    env = {**os.environ, "VIGIE_HUB_CLIENT_ID": f"ingest-{name}", "VIGIE_HUB_CAMPAIGN_LEASE_S": str(lease_s)}
    with log.open("wb") as fh:
        command = cli("hub", "serve", "--port", str(port), "--db", db, "--broker", f"127.0.0.1:{broker.port}")
        proc = subprocess.Popen(command, env=env, stdout=fh, stderr=subprocess.STDOUT)
    assert wait_for_port(port, timeout=30), log.read_text()
    return HubProcess(f"http://127.0.0.1:{port}", proc, log)


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The store both hubs serve from: a SQLite file, or a fresh PostgreSQL schema (``postgres``)."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield str(tmp_path / "hub.sqlite")
        return
    need_service(postgres_available(), f"PostgreSQL ({PG_DSN})")
    from psycopg.conninfo import conninfo_to_dict

    from hub.storage.postgres import PostgresStore

    schema = f"t_{uuid.uuid4().hex[:12]}"
    owner = PostgresStore(PG_DSN, schema=schema)  # creates the schema and its tables
    info = conninfo_to_dict(PG_DSN)
    user = f"{info['user']}@" if info.get("user") else ""
    host, port, name = info.get("host", "127.0.0.1"), info.get("port", "5432"), info.get("dbname", "test")
    try:
        yield f"postgresql://{user}{host}:{port}/{name}?options={quote(f'-csearch_path={schema}')}"
    finally:
        owner.drop_schema()
        owner.close()


@pytest.fixture
def two_hubs(
    tmp_path: Path, broker: LocalBroker, store_url: str
) -> Iterator[tuple[list[HubProcess], Tokens]]:
    db = store_url
    tokens = _prepare_store(db)
    hubs = [_start_hub(tmp_path, name, db, broker, lease_s=3) for name in ("a", "b")]
    try:
        yield hubs, tokens
    finally:
        for h in hubs:
            if h.process.poll() is None:
                h.process.terminate()
                try:
                    h.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    h.process.kill()


def _call(url: str, token: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (a local test hub)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _until(what: str, probe: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s; last {last}")


# -- end to end ----------------------------------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.parametrize(
    "store_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_campaign_finishes_across_the_death_of_its_hub_with_one_runner(
    two_hubs: tuple[list[HubProcess], Tokens], broker: LocalBroker
) -> None:
    hubs, tokens = two_hubs
    fleet = Fleet(broker.port, NORTH + SOUTH, answer_s=1.0)
    try:
        body = {"target": "models/ssd-coco-1.1.0.tar", "version": "1.1.0", "name": "c-takeover",
                "selector": {"sites": ["north"]}, "waves": [0.2, 0.6, 1.0],
                "policy": {"timeout_s": 60, "soak_s": 1.5}}  # fmt: skip
        code, answer = _call(hubs[1].url + "/v1/campaigns", tokens.technician, "POST", body)
        assert code == 403, answer  # technicians read campaigns, never steer them
        assert "fleet:write" in answer["detail"], answer
        code, created = _call(hubs[1].url + "/v1/campaigns", tokens.operator, "POST", body)
        assert code == 201, created
        assert (created["devices"], created["waves"]) == (10, 3)  # the south site is not selected

        def shown() -> dict[str, Any]:
            return _call(hubs[0].url + "/v1/campaigns/c-takeover", tokens.operator)[1]

        started = _until("wave 2 started", lambda: _when(shown(), lambda p: "wave 2 started" in _events(p)))
        holder = started["runner"]
        pids = {h.process.pid: h for h in hubs}
        victim = pids[int(holder.split(":")[1])]  # holder: host:pid:random
        survivor = next(h for h in hubs if h is not victim)
        victim.process.send_signal(signal.SIGKILL)  # no clean stop: its lease must lapse
        victim.process.wait(timeout=10)
        killed_at = time.monotonic()
        wave2 = _until("wave 2 commanded", lambda: len(fleet.installs()) >= 6 or None, timeout=10)
        assert wave2

        def seen() -> dict[str, Any]:
            return _call(survivor.url + "/v1/campaigns/c-takeover", tokens.operator)[1]

        taken = _until(
            "another hub takes over", lambda: _when(seen(), lambda p: p["runner"] not in (None, holder)), 20
        )
        takeover_s = time.monotonic() - killed_at
        assert int(taken["runner"].split(":")[1]) == survivor.process.pid
        done = _until("campaign done", lambda: _when(seen(), lambda p: p["state"] != "running"), 60)
        time.sleep(1.0)  # any late duplicate command would have arrived by now
        installs = fleet.installs()
    finally:
        fleet.stop()
    print(f"takeover after {takeover_s:.1f} s (lease 3 s)")
    assert done["state"] == "done", done
    assert (done["installed"], done["failed"]) == (10, 0), done
    assert sorted(installs) == sorted(NORTH)  # every north device, no south one
    assert set(installs.values()) == {1}, installs  # no device asked (nor updated) twice
    assert takeover_s < 3 + 5  # the lease (3 s) plus a few ticks
    events = _events(done)
    assert events[:3] == ["created", "wave 1 started", "wave 1 pass"], events
    assert (events.count("wave 2 started"), events.count("wave 3 started")) == (1, 1), events
    # One runner at a time: every step before the kill by the victim, every one after by the survivor.
    runners = [e["by"] for e in done["log"] if "by" in e]
    assert runners[:3] == [holder] * 3, done["log"]  # wave 1 started and passed, wave 2 started
    assert runners[3:] == [taken["runner"]] * (len(runners) - 3), done["log"]


def _when(p: dict[str, Any], ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    return p if ok(p) else None


def _events(p: dict[str, Any]) -> list[str]:
    return [e["event"] for e in p.get("log", [])]


@pytest.mark.e2e
def test_a_crash_looping_device_halts_the_campaign_at_the_gate(
    two_hubs: tuple[list[HubProcess], Tokens], broker: LocalBroker, tmp_path: Path, store_url: str
) -> None:
    hubs, tokens = two_hubs
    first: list[str] = []

    def crashes(key: str) -> bool:  # the first device that installs crash-loops on 1.1.0
        if not first:
            first.append(key)
        return key == first[0]

    fleet = Fleet(broker.port, NORTH, answer_s=0.3, crashes=crashes)
    token_file = tmp_path / "operator.token"
    token_file.write_text(tokens.operator)
    hub_args = ["--hub", hubs[0].url, "--token-file", str(token_file)]
    try:
        # The CLI is a client of the API: the hub runs the campaign.
        created = subprocess.run(cli("ota", "campaign", "create", "--name", "c-crash", "--target",
                                     "models/ssd-coco-1.1.0.tar", "--version", "1.1.0", "--site", "north",
                                     "--waves", "0.2,1", "--soak", "4", "--max-restarts", "1", *hub_args),
                                 capture_output=True, text=True, timeout=60)  # fmt: skip
        assert created.returncode == 0, created.stdout + created.stderr
        assert "campaign c-crash: 10 devices in 2 waves (run by the hub)" in created.stdout
        followed = subprocess.run(cli("ota", "campaign", "run", "c-crash", *hub_args),
                                  capture_output=True, text=True, timeout=90)  # fmt: skip
        installs = fleet.installs()
        rollbacks = [d for d, action in fleet.commands if action == "rollback"]
    finally:
        fleet.stop()
    assert followed.returncode == 1, followed.stdout + followed.stderr
    assert "c-crash: halted" in followed.stdout, followed.stdout
    assert "crash-looping" in followed.stdout, followed.stdout
    assert len(installs) == 2  # the canary wave only: wave 2 never asked
    assert first[0] in installs
    assert first[0] in rollbacks
    # operators' writes are in the audit log, with their names
    store = open_store(store_url)
    audit = store.list_audit(after=0, limit=1000, path="/v1/campaigns")
    store.close()
    assert any(e["method"] == "POST" and e["username"] == "olga" and e["status"] == 201 for e in audit)


@pytest.mark.e2e
def test_operators_pause_promote_and_abort_through_the_api(
    two_hubs: tuple[list[HubProcess], Tokens], broker: LocalBroker, tmp_path: Path
) -> None:
    hubs, tokens = two_hubs
    fleet = Fleet(broker.port, NORTH, answer_s=0.3)
    token_file = tmp_path / "operator.token"
    token_file.write_text(tokens.operator)
    hub_args = ["--hub", hubs[1].url, "--token-file", str(token_file)]

    def campaign(*args: str) -> str:
        run = subprocess.run(
            cli("ota", "campaign", *args, *hub_args), capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stdout + run.stderr
        return run.stdout.strip()

    def shown() -> dict[str, Any]:
        return _call(hubs[0].url + "/v1/campaigns/c-ops", tokens.operator)[1]

    try:
        for key in [*NORTH, SOUTH[0]]:  # the pilot: the north site and one south device
            code, answer = _call(
                f"{hubs[0].url}/v1/devices/{key}/tags", tokens.operator, "PUT", {"tags": ["pilot"]}
            )
            assert code == 200, answer
        code, answer = _call(
            f"{hubs[0].url}/v1/devices/{SOUTH[1]}/tags", tokens.technician, "PUT", {"tags": ["x"]}
        )
        assert code == 403, answer
        assert (
            _call(f"{hubs[0].url}/v1/devices/nowhere/cam-9/tags", tokens.operator, "PUT", {"tags": []})[0]
            == 404
        )
        assert len(_call(hubs[1].url + "/v1/device-tags", tokens.technician)[1]["data"]) == 11
        body = {"target": "models/ssd-coco-1.1.0.tar", "version": "1.1.0", "name": "c-ops",
                "selector": {"tags": ["pilot"], "sites": ["north"]}, "waves": [0.1, 0.5, 1.0],
                "policy": {"timeout_s": 60, "soak_s": 3600}}  # fmt: skip
        assert _call(hubs[0].url + "/v1/campaigns", tokens.operator, "POST", body)[0] == 201
        _until("wave 1 waits in its hour-long soak", lambda: shown()["installed"] == 1 or None)
        assert campaign("pause", "c-ops") == "c-ops: paused"
        assert campaign("promote", "c-ops") == "c-ops: paused"  # promoted, but paused: no wave starts
        time.sleep(2)
        assert len(fleet.installs()) == 1
        assert campaign("resume", "c-ops") == "c-ops: running"
        _until("promoted wave 2 started", lambda: "wave 2 started" in _events(shown()) or None, timeout=20)
        assert "wave 1 promoted" in _events(shown())
        assert campaign("abort", "c-ops") == "c-ops: aborted"
        code, answer = _call(hubs[0].url + "/v1/campaigns/c-ops/resume", tokens.operator, "POST")
        assert code == 409, answer
        assert "aborted" in answer["detail"], answer
        time.sleep(2)
        assert len(fleet.installs()) == 5  # waves 1 and 2 (1 + 4), nothing after the abort
        listed = campaign("list")
        assert "c-ops" in listed
        assert "aborted" in listed
    finally:
        fleet.stop()
    assert _events(shown())[-1] == "aborted"


@pytest.mark.e2e
def test_a_scaled_out_hub_runs_campaigns_in_its_ingest_worker(tmp_path: Path, broker: LocalBroker) -> None:
    """`vigie hub serve --workers 2`: the API workers have no broker; the ingest worker runs campaigns."""
    db = str(tmp_path / "hub.sqlite")
    tokens = _prepare_store(db)
    port = free_port()
    log = tmp_path / "scaled.log"
    fleet = Fleet(broker.port, NORTH, answer_s=0.2)
    with log.open("wb") as fh:
        command = cli("hub", "serve", "--workers", "2", "--port", str(port), "--db", db,
                      "--broker", f"127.0.0.1:{broker.port}")  # fmt: skip
        hub = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT)
    try:
        assert wait_for_port(port, timeout=30), log.read_text()
        body = {"target": "models/ssd-coco-1.1.0.tar", "version": "1.1.0", "name": "c-scaled",
                "selector": {"sites": ["north"]}, "waves": [0.5, 1.0]}  # fmt: skip
        assert _call(f"http://127.0.0.1:{port}/v1/campaigns", tokens.operator, "POST", body)[0] == 201

        def shown() -> dict[str, Any]:
            return _call(f"http://127.0.0.1:{port}/v1/campaigns/c-scaled", tokens.operator)[1]

        done = _until("campaign done", lambda: _when(shown(), lambda p: p["state"] != "running"), 60)
    finally:
        fleet.stop()
        hub.terminate()
        hub.wait(timeout=30)
    assert (done["state"], done["installed"]) == ("done", 10), done
    assert sorted(fleet.installs()) == sorted(NORTH)


@pytest.mark.e2e
def test_a_hub_started_after_the_reports_reads_them_retained(tmp_path: Path, broker: LocalBroker) -> None:
    """Wave 2's devices report while no hub runs at all: the hub started next reads their retained
    reports and finishes the campaign, instead of waiting for devices that answered long ago."""
    db = str(tmp_path / "hub.sqlite")
    tokens = _prepare_store(db)
    first = _start_hub(tmp_path, "first", db, broker, lease_s=3)
    fleet = Fleet(broker.port, NORTH, answer_s=1.0)
    later: HubProcess | None = None
    try:
        body = {"target": "models/ssd-coco-1.1.0.tar", "version": "1.1.0", "name": "c-retained",
                "selector": {"sites": ["north"]}, "waves": [0.2, 1.0],
                "policy": {"timeout_s": 20}}  # fmt: skip
        assert _call(first.url + "/v1/campaigns", tokens.operator, "POST", body)[0] == 201

        def shown(hub: HubProcess) -> dict[str, Any]:
            return _call(hub.url + "/v1/campaigns/c-retained", tokens.operator)[1]

        _until("wave 2 started", lambda: _when(shown(first), lambda p: "wave 2 started" in _events(p)))
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
        time.sleep(3)  # wave 2's devices answer (after 1 s) while no hub is up
        assert len(fleet.installs()) == 10
        later = _start_hub(tmp_path, "later", db, broker, lease_s=3)
        done = _until("campaign ended", lambda: _when(shown(later), lambda p: p["state"] != "running"), 40)
    finally:
        fleet.stop()
        if later is not None:
            later.process.terminate()
            later.process.wait(timeout=15)
    assert (done["state"], done["installed"]) == ("done", 10), done
    assert set(fleet.installs().values()) == {1}
