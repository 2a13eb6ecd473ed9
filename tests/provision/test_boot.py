"""Boot what was provisioned: systemd-nspawn runs the root filesystem's own systemd, which starts the agent.

``test_ansible.py`` leaves the units enabled, never started (a chroot is not booted). Here the same
x86-64 bookworm root filesystem is provisioned, then booted with ``systemd-nspawn --boot``: its
systemd starts ``vigie-agent@cam-7.service`` (Type=notify, watchdog), the agent publishes over
mutual TLS with the certificate it enrolled for, to the hub's own Mosquitto on this machine, and
the hub stores the event. ``systemctl stop`` then ends it cleanly.

How nspawn runs on a machine whose PID 1 is not systemd: ``--register=no`` (no systemd-machined)
and ``--keep-unit`` (without it nspawn asks the host's systemd over D-Bus for a scope and stops with
"Failed to open system bus"). The container shares this machine's network (no ``--private-network``:
the broker and the hub are on 127.0.0.1), so the units that would act on the host's network or
clock (nftables, sshd, chrony) are masked for this boot with ``systemd.mask=`` on the container's
command line; test_ansible.py checks that provisioning enabled them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.storage import EventQuery, SQLiteStore
from tests.conftest import ROOT, Hub, cli, need_service
from tests.provision.conftest import LOCKS, lock_pins, venv_pins
from tests.provision.test_ansible import _base_rootfs, _extract, _inventory, _play, _recap
from vigie.broker import find_mosquitto
from vigie.netutil import free_port, wait_for_port

pytestmark = [pytest.mark.provision, pytest.mark.boot, pytest.mark.timeout(1200)]

UNIT = "vigie-agent@cam-7.service"
# Units that would act on this machine's own network or clock: the container shares them.
MASKED = ["nftables.service", "ssh.service", "chrony.service", "apt-daily.timer", "apt-daily-upgrade.timer"]
#: Where the box's camera photo lies, here and on the box (readable by the agent's user).
FOOTAGE = Path("/var/cache/vigie-tests/boot-footage")


@dataclass
class TlsHub:
    hub: Hub
    env: dict[str, str]
    tls_port: int


@pytest.fixture
def tls_hub(tmp_path: Path) -> Iterator[TlsHub]:
    """A hub with its own CA and its own Mosquitto (mutual TLS for devices), as `vigie hub init` sets up."""
    need_service(find_mosquitto() is not None, "mosquitto")
    tls_port, local_port, http_port = free_port(), free_port(), free_port()
    state, db = tmp_path / "hub-state", tmp_path / "hub.sqlite"
    env = {
        "VIGIE_HUB_STATE_DIR": str(state), "VIGIE_HUB_DB": str(db), "VIGIE_HUB_TLS_PORT": str(tls_port),
        "VIGIE_HUB_BROKER_HOST": "localhost", "VIGIE_HUB_BROKER_USER": "root",
        "VIGIE_HUB_TLS_BIND": "127.0.0.1", "VIGIE_HUB_LOCAL_PORT": str(local_port),
    }  # fmt: skip
    full = {**os.environ, **env, "VIGIE_HUB_AUTH": "off"}
    subprocess.run(cli("hub", "init", "--broker-host", "localhost"), check=True, capture_output=True,
                   env=full, timeout=60)  # fmt: skip
    conf = state / "broker" / "mosquitto.conf"
    broker = subprocess.Popen([find_mosquitto() or "mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
    log = tmp_path / "hub.log"
    with log.open("wb") as out:
        serve = cli("hub", "serve", "--port", str(http_port), "--db", str(db), "--broker",
                    f"127.0.0.1:{local_port}", "--mqtt-username", "vigie-hub", "--mqtt-password-file",
                    str(state / "broker" / "hub.password"))  # fmt: skip
        proc = subprocess.Popen(serve, stdout=out, stderr=subprocess.STDOUT, env=full)
    hub = Hub(f"http://127.0.0.1:{http_port}", proc, log)
    try:
        assert wait_for_port(tls_port), "the hub's Mosquitto did not start"
        assert wait_for_port(http_port, timeout=30), log.read_text()
        yield TlsHub(hub, env, tls_port)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        broker.terminate()
        broker.wait(timeout=10)


def _site(tmp_path: Path, tls_port: int, footage: Path) -> Path:
    """The profiles and a site whose camera replays a photo, at 1 frame/s, 10 s windows.

    The photo is at the same path on this machine (the preflight validates the site file here,
    sources included) and on the box.
    """
    fw = tmp_path / "firmware_configs"
    shutil.copytree(ROOT / "firmware_configs" / "profiles", fw / "profiles")
    (fw / "sites").mkdir()
    site = {
        "site": "ladder", "broker": {"host": "localhost", "port": tls_port},
        "anonymisation": {"window_s": 10, "k": 3},
        # The photo's third person scores 0.42, under the model's 0.5: this camera counts from 0.4,
        # so the window holds 3 people, over k = 3 (a per-camera threshold, as docs/configuration.md).
        "cameras": [{"device": "cam-7", "profile": "generic-x86", "loop": True, "fps_cap": 1, "threads": 1,
                     "source": str(footage), "thresholds": {"person": 0.4}}],
    }  # fmt: skip
    (fw / "sites" / "ladder.yaml").write_text(yaml.safe_dump(site, sort_keys=False))
    return fw


class Container:
    """A root filesystem booted by systemd-nspawn; commands run inside it through nsenter."""

    def __init__(self, rootfs: Path, log: Path) -> None:
        argv = ["systemd-nspawn", "--quiet", "--directory", str(rootfs), "--boot", "--register=no",
                "--keep-unit", "--console=pipe", f"--machine=vigie-boot-{os.getpid()}",
                "--", *(f"systemd.mask={unit}" for unit in MASKED)]  # fmt: skip
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self.leader = self._leader()

    def _leader(self) -> int:
        """The container's PID 1 (its systemd), a child of nspawn."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"systemd-nspawn exited: {self.log.read_text()[-3000:]}"
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            for pid in children:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
            time.sleep(0.2)
        raise AssertionError(f"no systemd in the container after 30 s: {self.log.read_text()[-3000:]}")

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", f"--target={self.leader}", "--mount", "--pid", "--uts", "--ipc", "--root", "--wd",
             "--", *argv],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def wait_booted(self, timeout: float = 180) -> str:
        """The system state once start-up is over (``running``, or ``degraded`` when a unit failed)."""
        deadline = time.monotonic() + timeout
        while True:
            # Until its systemd listens on /run/systemd/private, systemctl cannot connect: try again.
            done = self.run("systemctl", "is-system-running", "--wait", timeout=timeout)
            if done.stdout.strip() or time.monotonic() > deadline:
                return done.stdout.strip() or done.stderr.strip()
            time.sleep(0.5)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_watchdog(self, unit: str, after: int, timeout: float) -> dict[str, str]:
        """The unit's properties once systemd has had a watchdog ping later than ``after`` (µs)."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.show(unit, "WatchdogTimestampMonotonic", "NRestarts", "MainPID")
            if int(now.get("WatchdogTimestampMonotonic") or 0) > after > 0:
                return now
            assert time.monotonic() < deadline, f"no watchdog ping after {after} µs within {timeout} s: {now}"
            time.sleep(1)

    def journal(self, unit: str) -> str:
        return self.run("journalctl", "--no-pager", "-o", "cat", "-u", unit).stdout

    def poweroff(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # nspawn asks the container's systemd to power off
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _wait_stored(db: Path, timeout: float) -> list[dict[str, Any]]:
    """The events the hub has stored, once one of them counts people (a first, partial window may not)."""
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        store = SQLiteStore(db)
        try:
            rows = store.list_events(EventQuery())[0]
        finally:
            store.close()
        if any(_people(e) for e in rows):
            return rows
        time.sleep(1)
    raise AssertionError(f"no event counting people stored within {timeout} s: {rows}")


def _people(event: dict[str, Any]) -> int:
    """The event's person count when it is one (not suppressed under k)."""
    count = event["counts"].get("person")
    return count if isinstance(count, int) else 0


def _edge_status(box: Container) -> subprocess.CompletedProcess[str]:
    return box.run("/opt/vigie/venv/bin/vigie", "edge", "status", "--json", "--outbox",
                   "/var/lib/vigie/cam-7/outbox.sqlite")  # fmt: skip


def test_the_provisioned_box_boots_and_its_agent_publishes(
    tmp_path: Path, wheelhouse: Path, model_dir: Path, bus_jpg: Path, tls_hub: TlsHub
) -> None:
    nspawn = shutil.which("systemd-nspawn")
    need_service(nspawn is not None, "systemd-nspawn (apt-get install systemd-container)")
    need_service(shutil.which("nsenter") is not None, "nsenter (util-linux)")
    started = time.monotonic()
    rootfs = _extract(_base_rootfs(), tmp_path / "rootfs")
    # The photo sits at one path on this machine (the preflight checks sources here) and on the box,
    # outside /tmp and home folders: the agent's unit has PrivateTmp and ProtectHome, so a clone in a
    # `mktemp -d` folder (../shared under /tmp) left the agent without its source.
    footage = FOOTAGE / "bus.jpg"
    for folder in (FOOTAGE, rootfs / FOOTAGE.relative_to("/")):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        shutil.copy(bus_jpg, folder / "bus.jpg")
        (folder / "bus.jpg").chmod(0o644)
    common = {
        "vigie_site": "ladder", "vigie_hub_url": tls_hub.hub.url,
        "vigie_maintenance_networks": ["10.0.0.0/8"],
        "vigie_firmware_dir": str(_site(tmp_path, tls_hub.tls_port, footage)), "vigie_manage_services": False,
        "agent_wheelhouse": str(wheelhouse), "agent_model_src": str(model_dir),
        "vigie_hub_cli": str(Path(sys.executable).parent / "vigie"), "vigie_hub_environment": tls_hub.env,
    }  # fmt: skip
    host = {"ansible_connection": "community.general.chroot", "ansible_host": str(rootfs)}
    provision = _play("provision.yml", _inventory(tmp_path, {"cam-7": host}, common))
    assert provision.returncode == 0, provision.stdout[-6000:] + provision.stderr[-3000:]
    assert _recap(provision.stdout, "cam-7")["failed"] == 0
    assert venv_pins(rootfs) == {**lock_pins(LOCKS / "edge-x86_64.txt"), "vigie": "0.1.0"}
    provisioned = time.monotonic()

    box = Container(rootfs, tmp_path / "boot.log")
    try:
        state = box.wait_booted()
        failed = box.run("systemctl", "--failed", "--no-legend", "--plain").stdout
        assert state == "running", f"{state}: failed units:\n{failed}\n{box.log.read_text()[-2000:]}"
        booted = time.monotonic()
        # Type=notify: active means the agent said READY=1 (model loaded, source open, link started).
        assert box.run("systemctl", "is-active", UNIT).stdout.strip() == "active", box.journal(UNIT)[-3000:]
        first = box.show(UNIT, "WatchdogTimestampMonotonic", "NRestarts", "MainPID")

        hub = tls_hub.hub
        # The hub stored the box's events as sent: the bus photo's people, counted over k = 3.
        stored = _wait_stored(Path(tls_hub.env["VIGIE_HUB_DB"]), timeout=120)
        assert {(e["site"], e["device"]) for e in stored} == {("ladder", "cam-7")}
        assert max(_people(e) for e in stored) >= 3, stored
        # And analysts see them through the API (counts there go through the hub's disclosure control).
        served = hub.wait_for("/v1/events", lambda r: r["data"], 30)["data"]
        assert {e["device"] for e in served} == {"cam-7"}
        published = time.monotonic()

        # What the technician sees on the box (docs/day-0.md): running, connected, no trouble (the
        # status file is rewritten every heartbeat, 10 s).
        status = _edge_status(box)
        deadline = time.monotonic() + 30
        while status.returncode != 0 and time.monotonic() < deadline:
            time.sleep(1)
            status = _edge_status(box)
        assert status.returncode == 0, status.stdout + status.stderr
        assert json.loads(status.stdout)["connected"] is True

        # The watchdog is notified again (every half WatchdogSec=60), by the same process, never restarted.
        later = box.wait_watchdog(UNIT, after=int(first["WatchdogTimestampMonotonic"]), timeout=75)
        assert later["NRestarts"] == first["NRestarts"] == "0"
        assert later["MainPID"] == first["MainPID"]

        # Stopped, it closes its window into the outbox and exits within TimeoutStopSec: 0, or 3 when
        # events wait in the outbox for the next start (SIGTERM does not wait for the broker), which
        # the unit counts as success.
        stop = box.run("systemctl", "stop", UNIT, timeout=60)
        assert stop.returncode == 0, stop.stderr
        after = box.show(UNIT, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
        journal = box.journal(UNIT)
        assert after["ActiveState"] == "inactive", journal[-3000:]
        assert after["Result"] == "success", journal[-3000:]
        assert (after["ExecMainCode"], after["ExecMainStatus"]) in {("1", "0"), ("1", "3")}, after
        if after["ExecMainStatus"] == "3":
            assert "wait in /var/lib/vigie/cam-7/outbox.sqlite; sent at the next start" in journal
        assert "Traceback" not in journal
        assert json.loads(_edge_status(box).stdout)["state"] == "stopped"
    finally:
        box.poweroff()
    print(  # the durations docs/provisioning.md quotes (pytest -s)
        f"nspawn boot test: provision {provisioned - started:.0f} s, boot {booted - provisioned:.0f} s, "
        f"first event {published - booted:.0f} s after boot, total {time.monotonic() - started:.0f} s"
    )
