"""A campaign end to end: a real Mosquitto, three devices (agent + OTA listener processes), waves, gates."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.ota.updater import ModelUpdater
from hub.campaigns import CampaignStore
from hub.storage import Campaign, SQLiteStore
from ota.bundle import pack
from ota.rollout import DeviceOutcome, GatePolicy, evaluate_gate, plan_waves
from tests.conftest import PG_DSN, cli, need_service, postgres_available
from tests.ota.test_ota import LABELS, MODEL, Repo, _manifest
from vigie.exceptions import VigieError
from vigie.netutil import free_port, wait_for_port


@pytest.fixture
def hub_repo(tmp_path: Path) -> Iterator[Repo]:
    """The hub itself: `vigie hub init` made the TUF repository, `vigie hub serve` serves it at /ota."""
    state, db = tmp_path / "hub-state", tmp_path / "hub.sqlite"
    env = {**os.environ, "VIGIE_HUB_STATE_DIR": str(state), "VIGIE_HUB_BROKER_USER": "root"}
    subprocess.run(cli("hub", "init", "--db", str(db)), env=env, check=True, capture_output=True, timeout=60)
    port = free_port()
    hub = subprocess.Popen(cli("hub", "serve", "--no-ingest", "--db", str(db), "--port", str(port)), env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    (tmp_path / "bundles").mkdir()
    try:
        assert wait_for_port(port, timeout=30)
        yield Repo(
            state / "ota",
            f"http://127.0.0.1:{port}/ota",
            tmp_path / "bundles",
            tmp_path / "hub-state-offline-keys",
        )
    finally:
        hub.terminate()
        hub.wait(timeout=20)


def test_plan_waves_and_gates() -> None:
    devices = [f"s/cam-{i}" for i in range(200)]
    waves = plan_waves(devices, seed="c1")
    assert [len(w) for w in waves] == [2, 18, 80, 100]
    assert sorted(d for w in waves for d in w) == sorted(devices)
    assert plan_waves(devices, seed="c1") == waves  # reproducible
    assert plan_waves(devices, seed="c2")[0] != waves[0]  # another campaign, another canary
    assert [len(w) for w in plan_waves(devices[:3])] == [1, 1, 1]
    with pytest.raises(ValueError, match="increasing"):
        plan_waves(devices, [0.5, 0.1, 1.0])
    policy = GatePolicy(max_failure_rate=0.0, max_latency_ms=100, timeout_s=60)
    wave = ["a", "b"]
    ok = {"a": DeviceOutcome("installed", 40), "b": DeviceOutcome("installed", 60)}
    assert evaluate_gate(wave, ok, policy, started=0, now=1).verdict == "pass"
    assert evaluate_gate(wave, {"a": ok["a"]}, policy, started=0, now=1).verdict == "wait"
    assert evaluate_gate(wave, {"a": ok["a"]}, policy, started=0, now=61).verdict == "halt"  # b silent
    bad = {"a": ok["a"], "b": DeviceOutcome("failed")}
    assert evaluate_gate(wave, bad, policy, started=0, now=1).verdict == "halt"
    slow = {"a": DeviceOutcome("installed", 150), "b": DeviceOutcome("installed", 170)}
    decision = evaluate_gate(wave, slow, policy, started=0, now=1)
    assert decision.verdict == "halt"
    assert "median inference 160 ms" in decision.reason


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sides(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[CampaignStore]]:
    """Three connections to one hub store, as three processes would have: runner, operator, reader."""
    if request.param == "sqlite":
        SQLiteStore(tmp_path / "hub.sqlite").close()  # the hub made its store
        stores = [CampaignStore.open(tmp_path / "hub.sqlite") for _ in range(3)]
        yield stores
        for s in stores:
            s.close()
        return
    need_service(postgres_available(), f"PostgreSQL ({PG_DSN})")
    from hub.storage.postgres import PostgresStore

    schema = f"t_{uuid.uuid4().hex[:12]}"
    pg = [PostgresStore(PG_DSN, schema=schema) for _ in range(3)]
    try:
        yield [CampaignStore(s) for s in pg]
    finally:
        pg[0].drop_schema()
        for s in pg:
            s.close()


def test_an_operator_pause_and_a_runner_step_do_not_undo_each_other(sides: list[CampaignStore]) -> None:
    """The runner and `vigie ota campaign pause` are two processes writing one campaign."""
    runner_side, operator_side, reader = sides
    runner_side.create("models/m.tar", "1.0.0", [f"s/cam-{i}" for i in range(10)], name="c1")
    read = threading.Event()

    def start_wave(doc: Campaign) -> dict[str, Any]:
        read.set()
        time.sleep(0.5)  # the operator pauses while the runner is between its read and its write
        return {"wave_started": 1.0, "log": [*doc["log"], {"at": 1.0, "event": "wave 1 started", "why": ""}]}

    step = threading.Thread(target=runner_side.modify, args=("c1", start_wave))
    step.start()
    assert read.wait(5)
    operator_side.set_state("c1", "paused", "operator: pause")
    step.join()
    doc = reader.get("c1")
    assert doc["state"] == "paused"
    assert doc["wave_started"] == 1.0  # the wave the runner started is not forgotten (nor started twice)
    assert [e["event"] for e in doc["log"]] == ["wave 1 started", "paused"]
    operator_side.set_state("c1", "aborted", "operator: abort")
    with pytest.raises(VigieError, match="c1 is aborted: it cannot become running"):
        operator_side.set_state("c1", "running", "operator: resume")
    with pytest.raises(VigieError, match="campaign 'c1' exists"):
        reader.create("models/m.tar", "1.0.0", ["s/cam-0"], name="c1")
    with pytest.raises(VigieError, match="no campaign 'c2'"):
        reader.set_state("c2", "paused", "operator: pause")


def test_a_wrong_db_is_refused_not_created(tmp_path: Path) -> None:
    run = subprocess.run(cli("ota", "campaign", "list", "--db", str(tmp_path / "typo.sqlite")),
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode != 0
    assert "typo.sqlite: no hub store there" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "typo.sqlite").exists()


@pytest.mark.e2e
def test_campaign_through_waves_then_a_bad_model_halts_at_the_canary(
    hub_repo: Repo,
    broker: Any,
    model_dir: Path,
    vtest_avi: Path,
    bus_jpg: Path,
    tmp_path: Path,
) -> None:
    repo = hub_repo  # the TUF repository as the hub serves it
    first = repo.bundles / "first.tar"
    pack(model_dir / MODEL, model_dir / LABELS, _manifest("1.0.0"), first)
    broker_arg = f"127.0.0.1:{broker.port}"
    procs: list[subprocess.Popen[bytes]] = []
    devices = [f"cam-{i}" for i in range(1, 4)]
    try:
        for name in devices:
            ota = tmp_path / name / "ota"
            (ota / "metadata").mkdir(parents=True)
            (ota / "metadata" / "root.json").write_bytes(
                (repo.folder / "metadata" / "root.json").read_bytes()
            )
            ModelUpdater(ota, repo.url).install_initial(first)
            pid_file = tmp_path / name / "agent.pid"
            with (tmp_path / name / "agent.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        cli(
                            "--log-format",
                            "json",
                            "edge",
                            "run",
                            "--site",
                            "camp",
                            "--device",
                            name,
                            "--source",
                            str(vtest_avi),
                            "--loop",
                            "--realtime",
                            "--fps-cap",
                            "2",
                            "--threads",
                            "1",
                            "--window",
                            "10",
                            "--ota-dir",
                            str(ota),
                            "--pid-file",
                            str(pid_file),
                            "--broker",
                            broker_arg,
                            "--outbox",
                            str(tmp_path / name / "outbox.sqlite"),
                        ),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            with (tmp_path / name / "ota.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        cli(
                            "edge",
                            "ota-listen",
                            "--site",
                            "camp",
                            "--device",
                            name,
                            "--repo",
                            repo.url,
                            "--ota-dir",
                            str(ota),
                            "--agent-pid-file",
                            str(pid_file),
                            "--broker",
                            broker_arg,
                            "--crash-watch",
                            "2",
                        ),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all((tmp_path / d / "agent.pid").exists() for d in devices):
            time.sleep(0.2)
        time.sleep(2.0)  # listeners subscribed, agents on their first model

        db = tmp_path / "hub.sqlite"  # the hub's store: campaigns live there, beside its events

        def version(name: str) -> str:
            manifest = ModelUpdater(tmp_path / name / "ota", repo.url).current_manifest()
            assert manifest is not None
            return manifest.version

        def campaign(name: str, target: str, version: str, *extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                cli(
                    "ota",
                    "campaign",
                    "create",
                    "--name",
                    name,
                    "--target",
                    target,
                    "--version",
                    version,
                    "--devices",
                    ",".join(f"camp/{d}" for d in devices),
                    "--waves",
                    "0.33,0.66,1",
                    "--wave-timeout",
                    "60",
                    "--db",
                    str(db),
                    "--broker",
                    broker_arg,
                    "--run",
                    *extra,
                ),
                capture_output=True,
                text=True,
                timeout=180,
            )

        good = repo.make("1.1.0", model_dir / MODEL, model_dir / LABELS)
        run = campaign("c-good", good.target_name, "1.1.0")
        assert run.returncode == 0, run.stdout + run.stderr
        assert "c-good: done, 3/3 installed, 0 failed" in run.stdout
        assert run.stdout.count("pass:") == 3  # three waves, three gates passed
        for name in devices:
            manifest = ModelUpdater(tmp_path / name / "ota", repo.url).current_manifest()
            assert manifest is not None
            assert manifest.version == "1.1.0"
        # Every agent reloaded onto the new model (SIGHUP from its listener) and kept running.
        deadline = time.monotonic() + 20
        for name in devices:
            text = ""
            while time.monotonic() < deadline and "ssd-coco@1.1.0" not in text:
                text = (tmp_path / name / "agent.log").read_text()
                time.sleep(0.3)
            assert "ssd-coco@1.1.0" in text, text[-2000:]
        assert all(p.poll() is None for p in procs)

        # A model that does not load: the canary refuses it by itself, the campaign halts there.
        broken = tmp_path / "broken.tflite"
        broken.write_bytes(os.urandom(8192))
        bad = repo.make("1.2.0", broken, model_dir / LABELS)
        run = campaign("c-bad", bad.target_name, "1.2.0")
        assert run.returncode == 1, run.stdout + run.stderr
        assert "c-bad: halted, 0/3 installed, 1 failed" in run.stdout
        assert "wave 1 halt" in run.stdout
        shown = json.loads(
            subprocess.run(
                cli("ota", "campaign", "show", "c-bad", "--db", str(db)),
                capture_output=True,
                text=True,
            ).stdout
        )
        assert shown["steps"] == {"failed": 1}
        assert [version(n) for n in devices] == [
            "1.1.0"
        ] * 3  # the canary stayed; the others were never asked

        # A model that loads and is fast but sees far less (a wrong threshold): the canary installs it,
        # its reference-frame comparison shows the drift, the gate halts and rolls the canary back.
        drifting_bundle = repo.bundles / "drift.tar"
        drifting = pack(model_dir / MODEL, model_dir / LABELS, {**_manifest("1.3.0"), "min_score": 0.97},
                        drifting_bundle, references=(bus_jpg,))  # fmt: skip
        from ota.repository import publish

        publish(repo.folder, drifting_bundle, drifting.target_name, keys=repo.keys)
        run = campaign("c-drift", drifting.target_name, "1.3.0", "--max-drift", "0.5")
        assert run.returncode == 1, run.stdout + run.stderr
        assert "c-drift: halted" in run.stdout
        assert "detections changed by" in run.stdout
        shown = json.loads(
            subprocess.run(
                cli("ota", "campaign", "show", "c-drift", "--db", str(db)),
                capture_output=True,
                text=True,
            ).stdout
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and shown["steps"] != {"rolled_back": 1}:
            time.sleep(0.5)
            shown = json.loads(subprocess.run(
                cli("ota", "campaign", "show", "c-drift", "--db", str(db)), capture_output=True,
                text=True,
            ).stdout)  # fmt: skip
        assert [version(n) for n in devices] == ["1.1.0"] * 3  # the canary went back
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.mark.e2e
def test_a_thousand_simulated_devices_through_a_campaign(broker: Any, tmp_path: Path) -> None:
    """The fleet simulator's 1,000 devices answer like devices; the API shows the rollout's progress."""
    import urllib.request

    from hub.auth import hash_password, issue_token

    state, db = tmp_path / "state", tmp_path / "hub.sqlite"
    store = SQLiteStore(db)
    store.add_user("op", hash_password("operator password"), "operator", time.time())
    token, _ = issue_token(store, "op", ttl_s=600)
    store.close()
    env = {**os.environ, "VIGIE_HUB_STATE_DIR": str(state), "VIGIE_HUB_BROKER_USER": "root"}
    subprocess.run(cli("hub", "init", "--db", str(db)), env=env, check=True, capture_output=True, timeout=60)
    port = free_port()
    hub = subprocess.Popen(
        cli("hub", "serve", "--no-ingest", "--db", str(db), "--port", str(port)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    broker_arg = f"127.0.0.1:{broker.port}"
    sim = subprocess.Popen(
        cli(
            "sim",
            "--devices",
            "1000",
            "--duration",
            "75",
            "--broker",
            broker_arg,
            "--ota",
            "--heartbeat",
            "60",
            "--window",
            "60",
        ),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for_port(port, timeout=30)
        time.sleep(8)  # the fleet connects at 500 per second and subscribes
        devices = ",".join(f"sim/dev-{i:05d}" for i in range(1000))
        campaign = subprocess.Popen(
            cli(
                "ota",
                "campaign",
                "create",
                "--name",
                "c-fleet",
                "--target",
                "models/ssd-coco-1.1.0.tar",
                "--version",
                "1.1.0",
                "--devices",
                devices,
                "--wave-timeout",
                "30",
                "--db",
                str(db),
                "--broker",
                broker_arg,
                "--run",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        seen: list[tuple[int, str]] = []
        paused_at: int | None = None
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/campaigns/c-fleet", headers={"Authorization": f"Bearer {token}"}
        )
        while campaign.poll() is None:
            try:
                with urllib.request.urlopen(request, timeout=5) as r:  # noqa: S310
                    body = json.loads(r.read())
                    seen.append((body["installed"], body["state"]))
            except OSError:
                continue
            if paused_at is None and body["wave"] == 2:
                # The operator pauses during wave 2: no new wave starts until they resume.
                admin = ("--db", str(db))
                subprocess.run(
                    cli("ota", "campaign", "pause", "c-fleet", *admin), check=True, capture_output=True
                )
                # The wave as the pause found it: a step the runner committed between our read and the
                # pause is legitimate (it landed first); none may start after the pause.
                with urllib.request.urlopen(request, timeout=5) as r:  # noqa: S310
                    paused_at = json.loads(r.read())["wave"]
                time.sleep(4)
                with urllib.request.urlopen(request, timeout=5) as r:  # noqa: S310
                    during = json.loads(r.read())
                assert during["state"] == "paused"
                assert during["wave"] == paused_at
                subprocess.run(
                    cli("ota", "campaign", "resume", "c-fleet", *admin), check=True, capture_output=True
                )
            time.sleep(0.5)
        out, err = campaign.communicate()
        assert campaign.returncode == 0, out + err
        assert "c-fleet: done, 1000/1000 installed, 0 failed" in out
        assert out.count("pass:") == 4  # canary 1 %, then 10 %, 50 %, 100 %
        installed = [n for n, _ in seen]
        assert installed == sorted(installed)  # progress only goes up
        assert any(0 < n < 1000 for n in installed)  # and was visible while it ran
        with urllib.request.urlopen(request, timeout=5) as r:  # noqa: S310
            final = json.loads(r.read())
        assert final["state"] == "done"
        assert final["installed"] == 1000
        assert final["waves"] == 4
        assert paused_at == 2
        assert [e["event"] for e in final["log"]].count("paused") == 1
    finally:
        sim.terminate()
        hub.terminate()
        hub.wait(timeout=20)
        sim.wait(timeout=60)
