"""arm64 for real, under emulation: the playbook applied to a debootstrapped arm64 bookworm, its agent run.

The device is a Debian bookworm arm64 root filesystem (Raspberry Pi OS is bookworm-based), its
programs run by qemu-user-static through binfmt_misc, reached with Ansible's chroot connection
exactly as in test_ansible.py. The venv is built from aarch64 wheels (ai-edge-litert, NumPy,
OpenCV) fetched for that platform. The installed agent then runs on bus.jpg inside the root
filesystem and publishes to a broker and a hub on this machine (a chroot shares the host's
network): the event must carry the same counts as the same photo through the x86-64 agent.
Slow (emulated dpkg and Python): marked ``arm64``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.storage import EventQuery, SQLiteStore
from tests.conftest import Hub, cli, need_service
from tests.provision.conftest import LOCKS, lock_pins, locked_wheelhouse, venv_pins
from tests.provision.test_ansible import _base_rootfs, _extract, _firmware, _inventory, _play, _recap
from vigie.broker import LocalBroker
from vigie.netutil import free_port, wait_for_port

# Emulated dpkg and pip take far longer than the default 300 s.
pytestmark = [pytest.mark.provision, pytest.mark.arm64, pytest.mark.timeout(3600)]

BINFMT = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
# Bookworm's glibc is 2.36: every manylinux tag up to it runs there.
GLIBC_MINORS = (17, 24, 26, 27, 28, 31, 34, 35, 36)
PLATFORMS = ["manylinux2014_aarch64", *(f"manylinux_2_{n}_aarch64" for n in GLIBC_MINORS)]


@pytest.fixture(scope="module")
def aarch64_wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The aarch64 lock file's wheels for Python 3.11 (hashes checked), and this project's wheel."""
    platform = [arg for p in PLATFORMS for arg in ("--platform", p)]
    target = ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", *platform]
    folder = tmp_path_factory.mktemp("wheelhouse-aarch64")
    return locked_wheelhouse(folder, LOCKS / "edge-aarch64.txt", *target)


@pytest.fixture
def enrolling_hub(tmp_path: Path, broker: LocalBroker) -> Iterator[tuple[Hub, dict[str, str]]]:
    """One hub that enrols the device (its own CA) and ingests from the private broker."""
    env = {"VIGIE_HUB_STATE_DIR": str(tmp_path / "hub-state"), "VIGIE_HUB_DB": str(tmp_path / "hub.sqlite")}
    full = {**os.environ, **env, "VIGIE_HUB_AUTH": "off"}
    subprocess.run(cli("hub", "init"), check=True, capture_output=True, env=full, timeout=60)
    port = free_port()
    log = tmp_path / "hub.log"
    with log.open("wb") as out:
        serve = cli("hub", "serve", "--port", str(port), "--broker", f"127.0.0.1:{broker.port}")
        proc = subprocess.Popen(serve, stdout=out, stderr=subprocess.STDOUT, env=full)
    hub = Hub(f"http://127.0.0.1:{port}", proc, log)
    try:
        assert wait_for_port(port, timeout=30), log.read_text()
        hub.wait_for("/healthz", lambda r: r["ingest"]["connected"], timeout=15)
        yield hub, env
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _agent(argv: list[str], port: int, device: str, source: str, model_dir: str, outbox: str) -> None:
    done = subprocess.run(
        [*argv, "edge", "run", "--site", "ladder", "--device", device, "--source", source,
         "--model-dir", model_dir, "--broker", f"127.0.0.1:{port}", "--outbox", outbox],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_provision_and_run_on_an_emulated_arm64_box(
    tmp_path: Path,
    aarch64_wheelhouse: Path,
    model_dir: Path,
    bus_jpg: Path,
    broker: LocalBroker,
    enrolling_hub: tuple[Hub, dict[str, str]],
) -> None:
    need_service(BINFMT.exists(), "qemu-aarch64 in binfmt_misc (apt-get install qemu-user-static)")
    hub, hub_env = enrolling_hub
    started = time.monotonic()
    rootfs = _extract(_base_rootfs("arm64"), tmp_path / "rootfs")
    assert (rootfs / "usr/lib/aarch64-linux-gnu").is_dir()
    common = {
        "vigie_site": "ladder", "vigie_hub_url": hub.url, "vigie_maintenance_networks": ["10.20.0.0/24"],
        "vigie_firmware_dir": str(_firmware(tmp_path, "cam-1", "rpi5")), "vigie_manage_services": False,
        "agent_wheelhouse": str(aarch64_wheelhouse), "agent_model_src": str(model_dir),
        "vigie_hub_cli": str(Path(sys.executable).parent / "vigie"), "vigie_hub_environment": hub_env,
        "camera_rtsp_user": "viewer", "camera_rtsp_password": "s3cret-rtsp",
        # qemu-user has no netfilter netlink for `nft -c`; test_ansible.py checks the same template with it.
        "base_nftables_validate": "/usr/bin/test -s %s",
    }  # fmt: skip
    host = {"ansible_connection": "community.general.chroot", "ansible_host": str(rootfs)}
    inventory = _inventory(tmp_path, {"cam-1": host}, common, group="rpi5")

    first = _play("provision.yml", inventory, timeout=3600)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
    provisioned = time.monotonic()
    # The venv holds aarch64 builds, and the rpi5 profile's venv sees the OS's packages (picamera2).
    venv = rootfs / "opt/vigie/venv"
    assert list(venv.glob("lib/python3.11/site-packages/cv2/cv2*aarch64*.so")) or list(
        venv.glob("lib/python3.11/site-packages/opencv_python_headless.libs/*")
    )
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    assert _recap(first.stdout, "cam-1")["changed"] > 10
    # Installed from the aarch64 lock file: pip freeze on the box says exactly its versions, and vigie.
    assert venv_pins(rootfs) == {**lock_pins(LOCKS / "edge-aarch64.txt"), "vigie": "0.1.0"}

    # The installed agent, run by qemu as the service user, publishes the photo's event to the hub.
    shutil.copy(bus_jpg, rootfs / "tmp" / "bus.jpg")
    subprocess.run(["mount", "-t", "proc", "proc", str(rootfs / "proc")], check=True, timeout=30)
    try:
        chroot = ["chroot", "--userspec=vigie:vigie", str(rootfs), "/usr/bin/env", "HOME=/var/lib/vigie",
                  "/opt/vigie/venv/bin/vigie"]  # fmt: skip
        outbox = "/var/lib/vigie/cam-1/outbox.sqlite"
        _agent(chroot, broker.port, "cam-1", "/tmp/bus.jpg", "/var/lib/vigie/models", outbox)
    finally:
        subprocess.run(["umount", str(rootfs / "proc")], check=True, timeout=30)
    ran = time.monotonic()
    _agent(cli(), broker.port, "cam-x86", str(bus_jpg), str(model_dir), str(tmp_path / "outbox.sqlite"))
    hub.wait_for("/v1/events", lambda r: r["count"] >= 2)
    # The counts as the devices sent them (the API's go through the hub's disclosure control, which
    # may coarsen them to "<5"): the same on both machines. At the model's person threshold of 0.5
    # the photo holds 2 people (the third scores 0.42): under k = 3, stored as "<3" on both.
    store = SQLiteStore(Path(hub_env["VIGIE_HUB_DB"]))
    try:
        events = store.list_events(EventQuery())[0]
    finally:
        store.close()
    by_device = {e["device"]: e for e in events}
    assert by_device["cam-1"]["counts"] == by_device["cam-x86"]["counts"], events
    assert "person" in by_device["cam-1"]["counts"], events

    second = _play("provision.yml", inventory, timeout=3600)
    assert second.returncode == 0, second.stdout[-6000:]
    recap = _recap(second.stdout, "cam-1")
    assert recap["changed"] == 0, [line for line in second.stdout.splitlines() if line.startswith("changed")]
    print(  # the durations docs/provisioning.md quotes (pytest -s)
        f"arm64: provision {provisioned - started:.0f} s, agent {ran - provisioned:.0f} s, "
        f"second run {time.monotonic() - ran:.0f} s"
    )
