"""OTA: TUF-signed bundles, the device's A/B updater, attacks refused, power loss at every step."""

from __future__ import annotations

import datetime as dt
import functools
import http.server
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata

from edge.agent import Agent
from edge.config import AgentConfig
from edge.ota.slots import SlotLayout
from edge.ota.updater import STEPS, ModelUpdater, SmokeResult, UpdateError, smoke_test
from ota.bundle import BundleError, BundleManifest, pack, unpack
from ota.repository import init_repository, load_signer, publish, refresh_timestamp
from tests.conftest import cli
from tests.unprivileged import as_nobody, readable_install
from vigie.mqtt import BrokerConfig
from vigie.netutil import free_port

MODEL = "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
LABELS = "coco_labels.txt"


def _manifest(version: str, budget: float = 2000.0) -> dict[str, object]:
    return {
        "model_id": "ssd-coco",
        "version": version,
        "profiles": ["generic-x86"],
        "input": {"width": 300, "height": 300, "dtype": "uint8"},
        "latency_budget_ms": budget,
    }


@dataclass
class Repo:
    folder: Path
    url: str
    bundles: Path
    keys: Path | None = None  # the offline root and targets keys, as `vigie hub init` leaves them

    def make(self, version: str, model: Path, labels: Path, budget: float = 2000.0) -> BundleManifest:
        out = self.bundles / f"ssd-coco-{version}.tar"
        manifest = pack(model, labels, _manifest(version, budget), out)
        publish(self.folder, out, manifest.target_name, keys=self.keys)
        return manifest


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    """A TUF repository served over real HTTP, as the hub serves it at /ota."""
    folder = tmp_path / "repo"
    init_repository(folder)
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    (tmp_path / "bundles").mkdir()
    try:
        yield Repo(folder, f"http://127.0.0.1:{server.server_address[1]}", tmp_path / "bundles")
    finally:
        server.shutdown()


@pytest.fixture
def device(tmp_path: Path, repo: Repo, model_dir: Path) -> ModelUpdater:
    """A device enrolled with the repository's root, running version 1.0.0."""
    root = tmp_path / "device"
    (root / "metadata").mkdir(parents=True)
    shutil.copy(repo.folder / "metadata" / "root.json", root / "metadata" / "root.json")
    first = pack(model_dir / MODEL, model_dir / LABELS, _manifest("1.0.0"), repo.bundles / "first.tar")
    updater = ModelUpdater(root, repo.url)
    updater.install_initial(repo.bundles / "first.tar")
    assert updater.current_manifest() == first
    return updater


def test_update_goes_through_and_is_verified(repo: Repo, device: ModelUpdater, model_dir: Path) -> None:
    new = repo.make("1.1.0", model_dir / MODEL, model_dir / LABELS)
    installed = device.update(new.target_name)
    assert installed.ref == "ssd-coco@1.1.0"
    assert device.current_manifest() == new
    assert device.current_slot().name == "b"  # type: ignore[union-attr]
    assert device.state()["step"] == "idle"
    assert device.state()["latency_ms"] > 0


def test_tampered_model_file_is_refused(repo: Repo, device: ModelUpdater, model_dir: Path) -> None:
    new = repo.make("1.1.0", model_dir / MODEL, model_dir / LABELS)
    (stored,) = (repo.folder / "targets" / "models").glob("*ssd-coco-1.1.0.tar")
    data = bytearray(stored.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte inside the model
    stored.write_bytes(bytes(data))
    with pytest.raises(UpdateError, match="LengthOrHashMismatchError"):
        device.update(new.target_name)
    assert device.current_manifest().version == "1.0.0"  # type: ignore[union-attr]


def test_metadata_signed_by_an_unknown_key_is_refused(
    repo: Repo, device: ModelUpdater, model_dir: Path
) -> None:
    new = repo.make("1.1.0", model_dir / MODEL, model_dir / LABELS)
    meta = repo.folder / "metadata"
    targets = Metadata.from_file(str(meta / "targets.json"))
    targets.sign(CryptoSigner.generate_ed25519())  # an attacker's key, not the one root names
    for name in (f"{targets.signed.version}.targets.json", "targets.json"):
        targets.to_file(str(meta / name))
    with pytest.raises(UpdateError, match="UnsignedMetadataError"):
        device.update(new.target_name)
    assert device.current_manifest().version == "1.0.0"  # type: ignore[union-attr]


def test_replayed_old_metadata_is_refused(repo: Repo, device: ModelUpdater, model_dir: Path) -> None:
    """Rollback attack: after seeing 1.2.0, the device is served the older timestamp naming 1.1.0."""
    meta = repo.folder / "metadata"
    repo.make("1.1.0", model_dir / MODEL, model_dir / LABELS)
    old_timestamp = (meta / "timestamp.json").read_bytes()
    newer = repo.make("1.2.0", model_dir / MODEL, model_dir / LABELS)
    device.update(newer.target_name)
    (meta / "timestamp.json").write_bytes(old_timestamp)
    with pytest.raises(UpdateError, match="BadVersionNumberError"):
        device.update("models/ssd-coco-1.1.0.tar")
    assert device.current_manifest().version == "1.2.0"  # type: ignore[union-attr]


def test_expired_timestamp_is_refused(repo: Repo, device: ModelUpdater, model_dir: Path) -> None:
    """Freeze attack: the mirror keeps serving a timestamp past its expiry."""
    new = repo.make("1.1.0", model_dir / MODEL, model_dir / LABELS)
    meta = repo.folder / "metadata"
    timestamp = Metadata.from_file(str(meta / "timestamp.json"))
    timestamp.signed.expires = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    timestamp.sign(load_signer(repo.folder, "timestamp"))
    timestamp.to_file(str(meta / "timestamp.json"))
    with pytest.raises(UpdateError, match="ExpiredMetadataError"):
        device.update(new.target_name)
    refresh_timestamp(repo.folder)  # the hub's daily re-signing fixes it
    assert device.update(new.target_name).version == "1.1.0"


def test_path_traversal_inside_a_signed_bundle_is_refused(
    repo: Repo, device: ModelUpdater, tmp_path: Path
) -> None:
    evil = repo.bundles / "evil.tar"
    manifest = _manifest("1.1.0") | {"model_file": "m.tflite", "labels_file": "l.txt", "files": {}}
    with tarfile.open(evil, "w") as tar:
        for name, data in (("manifest.json", json.dumps(manifest).encode()), ("../../escaped.txt", b"owned")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    publish(repo.folder, evil, "models/evil-1.1.0.tar")  # even properly signed
    with pytest.raises(UpdateError, match="not a plain file name"):
        device.update("models/evil-1.1.0.tar")
    assert not list(tmp_path.rglob("escaped.txt"))
    link = repo.bundles / "link.tar"
    with tarfile.open(link, "w") as tar:
        info = tarfile.TarInfo("model.tflite")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/shadow"
        tar.addfile(info)
    with pytest.raises(BundleError, match="link or device"):
        unpack(link, tmp_path / "out")


def test_bad_models_never_go_live(repo: Repo, device: ModelUpdater, model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(os.urandom(4096))
    bad = repo.make("1.1.0", broken, model_dir / LABELS)
    with pytest.raises(UpdateError, match="does not load"):
        device.update(bad.target_name)
    slow = repo.make("1.2.0", model_dir / MODEL, model_dir / LABELS, budget=0.01)  # 10 µs: too slow here
    with pytest.raises(UpdateError, match=r"over the 0\.01 ms budget"):
        device.update(slow.target_name)
    old = repo.make("0.9.0", model_dir / MODEL, model_dir / LABELS)
    with pytest.raises(UpdateError, match="downgrade"):
        device.update(old.target_name)
    assert device.current_manifest().version == "1.0.0"  # type: ignore[union-attr]
    assert device.state()["step"] == "idle"
    spare = device.root / "slots" / "b"
    assert not spare.exists() or not any(spare.iterdir())  # the failed slot was cleaned


def test_failed_check_after_switch_rolls_back(repo: Repo, device: ModelUpdater, model_dir: Path) -> None:
    new = repo.make("1.1.0", model_dir / MODEL, model_dir / LABELS)
    device.health = lambda slot, manifest: False  # e.g. crash loop or detection-rate drift after the switch
    with pytest.raises(UpdateError, match=r"rolled back to ssd-coco@1\.0\.0"):
        device.update(new.target_name)
    assert device.current_manifest().version == "1.0.0"  # type: ignore[union-attr]
    assert "rolled_back" in device.state()


def test_two_updaters_on_one_device_take_turns(repo: Repo, device: ModelUpdater, model_dir: Path) -> None:
    """The OTA listener and a technician's `vigie edge update` at once: one waits for the other."""
    new = repo.make("1.1.0", model_dir / MODEL, model_dir / LABELS)
    inside, most, count = 0, 0, threading.Lock()

    def slow_smoke(slot: Path, manifest: BundleManifest) -> SmokeResult:
        nonlocal inside, most
        with count:
            inside += 1
            most = max(most, inside)
        time.sleep(1.0)
        try:
            return smoke_test(slot, manifest)
        finally:
            with count:
                inside -= 1

    refusals: list[str] = []

    def update(updater: ModelUpdater) -> None:
        try:
            updater.update(new.target_name)
        except UpdateError as exc:
            refusals.append(str(exc))

    updaters = [ModelUpdater(device.root, repo.url, smoke=slow_smoke) for _ in range(2)]
    threads = [threading.Thread(target=update, args=(u,)) for u in updaters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert most == 1  # never two in the spare slot at once
    assert device.current_manifest() == new
    assert len(refusals) == 1
    assert "ssd-coco@1.1.0 is not newer than the installed ssd-coco@1.1.0" in refusals[0]


def test_a_held_lock_is_waited_for_then_named(device: ModelUpdater) -> None:
    # Another process in the middle of an update: it holds the folder's flock and wrote its pid.
    code = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "open(os.path.join(sys.argv[1], 'lock'), 'w').write(str(os.getpid()))\n"
        "print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(device.root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        device.lock_timeout_s = 0.5
        with pytest.raises(UpdateError, match=rf"holds the lock on \S+ \(pid {holder.pid}\) for over 0.5 s"):
            device.recover()
    finally:
        holder.kill()
        holder.wait()
    assert device.recover() == "nothing to recover"  # the lock died with its holder
    assert (device.root / "lock").read_text() == str(os.getpid())


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_a_lock_left_by_root_does_not_lock_out_the_service_user() -> None:
    """A technician ran `sudo vigie edge update`; the agent's OTA listener (another user) still can."""
    # Not under pytest's tmp_path: /tmp/pytest-of-root is closed to other users.
    folder = Path(tempfile.mkdtemp(prefix="vigie-ota-"))
    folder.chmod(0o777)
    (folder / "lock").write_text("1")
    (folder / "lock").chmod(0o600)  # root's, unreadable to others
    # The clone (and its .venv) may sit in a 0700 folder: nobody runs a readable copy of the code.
    install = readable_install("edge.ota.updater", folder / "install")
    code = "import sys; from pathlib import Path; import edge.ota.updater as u; "
    code += "assert u.__file__.startswith(sys.argv[2]), u.__file__; "
    code += "print(u.ModelUpdater(Path(sys.argv[1]), '').recover())"
    done = as_nobody(code, install, str(folder), str(install))
    shutil.rmtree(folder)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "nothing to recover"


def _stopped(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "T"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("step", STEPS)
def test_power_loss_at_every_step(repo: Repo, device: ModelUpdater, model_dir: Path, step: str) -> None:
    """`kill -9` while the updater stands at each step: on restart the device runs a verified model."""
    new = repo.make("1.1.0", model_dir / MODEL, model_dir / LABELS)
    proc = subprocess.Popen(
        cli(
            "edge",
            "update",
            "--ota-dir",
            str(device.root),
            "--repo",
            repo.url,
            "--target",
            new.target_name,
            "--pause-at",
            step,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while not _stopped(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _stopped(proc.pid), proc.communicate()[0]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((device.root / "state.json").read_text())["step"] == step
    done = subprocess.run(
        cli("edge", "update", "--ota-dir", str(device.root), "--recover"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    after = ModelUpdater(device.root, repo.url)
    manifest = after.current_manifest()
    assert manifest is not None
    expected = "1.0.0" if step in ("download", "unpack", "smoke") else "1.1.0"
    assert manifest.version == expected, done.stdout
    slot = after.current_slot()
    assert slot is not None
    # Verified: every file matches its manifest hash, and the model loads and runs.
    import hashlib

    for name, entry in manifest.files.items():
        assert hashlib.sha256((slot / name).read_bytes()).hexdigest() == entry.sha256
    from edge.ota.updater import smoke_test

    assert smoke_test(slot, manifest).ok
    assert after.state()["step"] == "idle"
    # And the next update still works.
    later = repo.make("1.2.0", model_dir / MODEL, model_dir / LABELS)
    assert after.update(later.target_name).version == "1.2.0"


def test_smoke_result_type() -> None:
    assert SmokeResult(True, 1.0).ok


@pytest.mark.e2e
def test_agent_runs_the_model_of_the_live_slot(
    repo: Repo, device: ModelUpdater, model_dir: Path, hub: Any, broker: Any, bus_jpg: Path, tmp_path: Path
) -> None:
    """After an update, a real agent detects with the new slot's model and says so in its events."""
    new = repo.make("1.1.0", model_dir / MODEL, model_dir / LABELS)
    device.update(new.target_name)
    done = subprocess.run(
        cli("edge", "run", "--site", "ota-test", "--device", "cam-1", "--source", str(bus_jpg),
            "--ota-dir", str(device.root), "--broker", f"127.0.0.1:{broker.port}", "--window", "10",
            "--k", "3", "--outbox", str(tmp_path / "outbox.sqlite")),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    body = hub.wait_for("/v1/events", lambda r: r["count"] >= 1, timeout=30)
    (event,) = body["data"]
    assert event["model"] == "ssd-coco@1.1.0"
    assert event["counts"]["bus"] == "<5"  # the same detector, from the OTA slot (one bus, under k)


class _RangeHandler(_Quiet):
    """Serves byte ranges (as the hub's StaticFiles does) and records them."""

    ranges: ClassVar[list[str]] = []
    cut_after: ClassVar[int | None] = None  # drop the connection after this many bytes of a target, once

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        header = self.headers.get("Range")
        if "/targets/" not in self.path or not path.is_file():
            return super().do_GET()
        data = path.read_bytes()
        start = 0
        if header:
            _RangeHandler.ranges.append(header)
            start = int(header.removeprefix("bytes=").split("-")[0])
        body = data[start:]
        self.send_response(206 if header else 200)
        self.send_header("Content-Length", str(len(body)))
        if header:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if _RangeHandler.cut_after is not None:
            self.wfile.write(body[: _RangeHandler.cut_after])
            _RangeHandler.cut_after = None
            self.close_connection = True
            return
        self.wfile.write(body)


def test_download_resumes_with_range_and_respects_the_cap(
    repo: Repo, device: ModelUpdater, model_dir: Path
) -> None:
    new = repo.make("1.1.0", model_dir / MODEL, model_dir / LABELS)
    handler = functools.partial(_RangeHandler, directory=str(repo.folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        _RangeHandler.ranges = []
        _RangeHandler.cut_after = 2_000_000  # the link drops after 2 MB
        first = ModelUpdater(device.root, url)
        with pytest.raises(UpdateError) as info:
            first.update(new.target_name)
        assert device.current_manifest().version == "1.0.0", str(info.value)  # type: ignore[union-attr]
        assert list((device.root / "cache" / "partial").glob("*.part")), str(info.value)
        (part,) = (device.root / "cache" / "partial").glob("*.part")
        assert part.stat().st_size == 2_000_000
        size = new.files[MODEL].size
        capped = ModelUpdater(device.root, url, max_bytes_per_s=2_000_000)
        started = time.monotonic()
        assert capped.update(new.target_name).version == "1.1.0"
        elapsed = time.monotonic() - started
        assert _RangeHandler.ranges == ["bytes=2000000-"]  # resumed, not restarted
        assert capped.fetcher.resumed_from  # and it says so
        remaining = size - 2_000_000
        assert elapsed >= remaining / 2_000_000 * 0.9  # the cap held (about 2 s for the last 4 MB)
        assert not list((device.root / "cache" / "partial").glob("*.part"))  # cleaned after success
    finally:
        server.shutdown()


def test_key_rotation_is_followed_and_the_old_key_is_refused(
    repo: Repo, device: ModelUpdater, model_dir: Path
) -> None:
    from ota.repository import rotate_key

    assert rotate_key(repo.folder, "targets") == 2
    assert rotate_key(repo.folder, "root") == 3
    assert rotate_key(repo.folder, "timestamp") == 4
    new = repo.make("1.1.0", model_dir / MODEL, model_dir / LABELS)
    assert device.update(new.target_name).version == "1.1.0"  # the device walked roots 2, 3, 4
    assert json.loads((device.root / "metadata" / "root.json").read_text())["signed"]["version"] == 4
    # Someone who kept the retired targets key signs a target of their own: refused.
    retired = (repo.folder / "keys").glob("targets.pem.retired-*")
    from cryptography.hazmat.primitives import serialization

    old = CryptoSigner(serialization.load_pem_private_key(next(retired).read_bytes(), password=None))  # type: ignore[arg-type]
    evil = repo.make("1.2.0", model_dir / MODEL, model_dir / LABELS)
    meta = repo.folder / "metadata"
    targets = Metadata.from_file(str(meta / "targets.json"))
    targets.sign(old)
    for name in (f"{targets.signed.version}.targets.json", "targets.json"):
        targets.to_file(str(meta / name))
    with pytest.raises(UpdateError, match="UnsignedMetadataError"):
        device.update(evil.target_name)


def test_an_agent_that_dies_after_the_switch_sends_the_device_back(
    repo: Repo, device: ModelUpdater, model_dir: Path, tmp_path: Path
) -> None:
    """Crash watch: `sleep` dies of the SIGHUP meant to reload it, as an agent crashing on the new model."""
    from edge.ota.listener import OtaListener
    from vigie import wire
    from vigie.mqtt import BrokerConfig

    new = repo.make("1.1.0", model_dir / MODEL, model_dir / LABELS)
    victim = subprocess.Popen(["sleep", "600"])
    pid_file = tmp_path / "agent.pid"
    pid_file.write_text(str(victim.pid))
    listener = OtaListener(BrokerConfig(), "port", "cam-1", device.root, repo.url, agent_pid_file=pid_file,
                           crash_watch_s=3)  # fmt: skip
    reports: list[tuple[str, dict[str, Any]]] = []
    listener._report = lambda campaign, step, **f: reports.append((step, f))  # type: ignore[method-assign]
    command = wire.OtaCommand(
        site="port", device="cam-1", ts=int(time.time()), campaign="c1", action="install",
        target=new.target_name, version="1.1.0",
    )  # fmt: skip
    try:
        listener.handle(command)
    finally:
        victim.kill()
        victim.wait()
    step, fields = reports[-1]
    assert step == "failed"
    assert "the agent stopped after switching to ssd-coco@1.1.0" in fields["reason"]
    assert device.current_manifest().version == "1.0.0"  # type: ignore[union-attr]


def test_slot_layout_names_the_live_slot_and_the_spare(device: ModelUpdater) -> None:
    layout = SlotLayout(device.root)
    assert layout.live_slot() == (device.root / "slots" / "a").resolve()
    assert layout.other_slot() == device.root / "slots" / "b"
    assert layout.live_manifest() == device.current_manifest()
    assert layout.manifest_in(layout.other_slot()) is None  # the spare holds no bundle yet
    shutil.rmtree(device.root / "slots" / "a")
    assert layout.current_slot() is not None  # `current` still points there...
    assert layout.live_slot() is None  # ...but the agent has nothing to load


def test_agent_reload_takes_a_new_slot_and_refuses_a_new_identity(
    repo: Repo, device: ModelUpdater, model_dir: Path, bus_jpg: Path, tmp_path: Path
) -> None:
    broker = BrokerConfig(port=free_port())  # never connected: reload() is called without run()
    config = AgentConfig.model_validate({
        "site": "t", "device": "cam-1", "source": str(bus_jpg), "model_dir": model_dir,
        "ota_dir": device.root, "outbox": tmp_path / "outbox.sqlite", "broker": broker,
    })  # fmt: skip
    offered = [config.model_copy(update={"device": "cam-2"})]
    agent = Agent(config, reload_config=lambda: offered[0])
    try:
        first = agent.pipeline.detector
        assert first.model_ref == "ssd-coco@1.0.0"
        agent.reload()  # another device name: refused, the running configuration kept
        assert (agent.reloads, agent.config.device, agent.pipeline.detector) == (0, "cam-1", first)
        offered[0] = config
        agent.reload()  # nothing changed: the loaded detector is kept
        assert (agent.reloads, agent.pipeline.detector) == (1, first)
        new = repo.make("1.1.0", model_dir / MODEL, model_dir / LABELS)
        device.update(new.target_name)
        agent.reload()  # the updater switched slots: the detector comes from the new one
        assert agent.reloads == 2
        assert agent.pipeline.detector.model_ref == "ssd-coco@1.1.0"
        assert agent.live_slot == (device.root / "slots" / "b").resolve()
    finally:
        agent.source.close()
        agent.outbox.close()
