"""The Ansible playbooks: lint, syntax, and real runs against a debootstrapped Debian root filesystem.

The device is a Debian bookworm root filesystem (``debootstrap --variant=minbase``) reached with
Ansible's chroot connection: apt, users, files, templates, the venv and enrolment really happen
in it. Services are enabled, not started (nothing is booted; ``vigie_manage_services: false``).
The hub is a real ``vigie hub serve`` under uvicorn, which the device enrols with over HTTP.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from tests.conftest import ROOT, cli, need_service
from tests.provision.conftest import LOCKS, lock_pins, venv_pins
from vigie.netutil import free_port, wait_for_port

ANSIBLE = ROOT / "ansible"
BIN = Path(sys.executable).parent
PLAYBOOKS = ["preflight.yml", "provision.yml", "update-agent.yml", "decommission.yml"]
CACHE = Path(os.environ.get("VIGIE_TEST_CACHE", Path.home() / ".cache" / "vigie-tests"))
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


def _ansible_env() -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_LOCAL_TEMP": str(CACHE / "ansible-tmp"),
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }


def _tool(name: str) -> str:
    path = BIN / name
    need_service(path.exists(), f"{name} (pip install 'vigie[provision]')")
    return str(path)


def test_ansible_lint_production_profile() -> None:
    done = subprocess.run(
        [_tool("ansible-lint"), "--profile", "production", "--offline", "--nocolor", "."],
        cwd=ANSIBLE, capture_output=True, text=True, timeout=300, env=_ansible_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "Profile 'production' was required, and it passed" in done.stderr + done.stdout


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_syntax_check(playbook: str) -> None:
    done = subprocess.run(
        [_tool("ansible-playbook"), "--syntax-check", "-i", "inventory/example-vieux-port", playbook],
        cwd=ANSIBLE, capture_output=True, text=True, timeout=120, env=_ansible_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_example_inventory_passes_preflight_as_shipped() -> None:
    """A newcomer copies inventory/example-vieux-port: as shipped, it matches its site file."""
    done = subprocess.run(
        [_tool("ansible-playbook"), "-i", "inventory/example-vieux-port", "preflight.yml"],
        cwd=ANSIBLE, capture_output=True, text=True, timeout=300, env=_ansible_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    hosts = yaml.safe_load((ANSIBLE / "inventory" / "example-vieux-port" / "hosts.yml").read_text())
    # The check that failed before (cam-1's profile in the site file) ran and passed for every host.
    site_check = done.stdout.split("this device, with the inventory's profile")[1].split("TASK [")[0]
    for group in hosts["vigie_agents"]["children"].values():
        for host in group["hosts"]:
            assert _recap(done.stdout, host)["failed"] == 0
            assert f"ok: [{host} -> localhost]" in site_check


def test_every_profile_has_a_group() -> None:
    for profile in (ROOT / "firmware_configs" / "profiles").glob("*.yaml"):
        group = ANSIBLE / "group_vars" / f"{profile.stem.replace('-', '_')}.yml"
        assert group.exists(), f"no Ansible group for profile {profile.stem}"
        assert yaml.safe_load(group.read_text())["vigie_profile"] == profile.stem


# -- a real Debian root filesystem ----------------------------------------------------------------
def _base_rootfs(arch: str = "amd64") -> Path:
    """A minbase bookworm with python3 and systemd (as on any Pi), made once by debootstrap, then cached.

    Another ``arch`` than the machine's (arm64) runs its programs through qemu-user-static's binfmt_misc.
    """
    tarball = CACHE / f"bookworm-minbase-systemd-{arch}.tar"
    if tarball.exists():
        return tarball
    need_service(shutil.which("debootstrap") is not None, "debootstrap (apt-get install debootstrap)")
    need_service(os.geteuid() == 0, "root (debootstrap and chroot need it)")
    build = CACHE / f"rootfs-build-{arch}"
    shutil.rmtree(build, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["debootstrap", f"--arch={arch}", "--variant=minbase", "--include=python3,systemd,systemd-sysv,dbus",
         "bookworm", str(build),
         "http://deb.debian.org/debian"],
        check=True, capture_output=True, timeout=1800,
    )  # fmt: skip
    with tarfile.open(tarball.with_suffix(".tmp"), "w") as tar:
        tar.add(build, arcname=".")
    tarball.with_suffix(".tmp").rename(tarball)
    shutil.rmtree(build, ignore_errors=True)
    return tarball


def _extract(tarball: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(tarball), "-C", str(dest)], check=True, timeout=300)
    # The device resolves names like any Debian box (apt needs it inside the chroot).
    shutil.copy("/etc/resolv.conf", dest / "etc" / "resolv.conf")
    return dest


@pytest.fixture
def hub_with_state(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    env = {"VIGIE_HUB_STATE_DIR": str(tmp_path / "hub-state"), "VIGIE_HUB_DB": str(tmp_path / "hub.sqlite")}
    full = {**os.environ, **env}
    subprocess.run(cli("hub", "init"), check=True, capture_output=True, env=full, timeout=60)
    port = free_port()
    log = (tmp_path / "hub.log").open("wb")
    proc = subprocess.Popen(
        cli("hub", "serve", "--no-ingest", "--port", str(port)),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=full,
    )
    try:
        assert wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}", env
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def _firmware(tmp_path: Path, device: str, profile: str = "generic-x86") -> Path:
    """The repository's profiles and a site file for the test device (TLS broker on the hub host)."""
    fw = tmp_path / "firmware_configs"
    shutil.copytree(ROOT / "firmware_configs" / "profiles", fw / "profiles")
    (fw / "sites").mkdir()
    site = {
        "site": "ladder", "description": "Provisioning test site", "location": [43.2965, 5.3698],
        "broker": {"host": "localhost", "port": 8883},
        "cameras": [{"device": device, "profile": profile, "source": "rtsp://${VIGIE_RTSP_USER}:"
                     "${VIGIE_RTSP_PASSWORD}@10.20.0.50/stream1", "fps_cap": 2}],
    }  # fmt: skip
    (fw / "sites" / "ladder.yaml").write_text(yaml.safe_dump(site, sort_keys=False))
    return fw


def _inventory(
    tmp_path: Path, hosts: dict[str, dict[str, str]], common: dict[str, object], group: str = "generic_x86"
) -> Path:
    inventory = {
        "vigie_agents": {"children": {group: {"hosts": hosts}}, "vars": common},
        "vigie_hub": {"hosts": {"hub-local": {"ansible_connection": "local",
                                              "ansible_python_interpreter": sys.executable}}},
    }  # fmt: skip
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def _play(
    playbook: str, inventory: Path, *extra: str, timeout: int = 1200
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("ansible-playbook"), "-i", str(inventory), playbook, *extra],
        cwd=ANSIBLE, capture_output=True, text=True, timeout=timeout, env=_ansible_env(),
    )  # fmt: skip


def _recap(output: str, host: str) -> dict[str, int]:
    for m in RECAP.finditer(output):
        if m.group(1) == host:
            return {"ok": int(m.group(2)), "changed": int(m.group(3)), "failed": int(m.group(5))}
    raise AssertionError(f"no recap for {host}:\n{output[-3000:]}")


@pytest.mark.provision
def test_provision_debootstrapped_debian(
    tmp_path: Path, wheelhouse: Path, model_dir: Path, hub_with_state: tuple[str, dict[str, str]]
) -> None:
    hub_url, hub_env = hub_with_state
    rootfs = _extract(_base_rootfs(), tmp_path / "rootfs")
    common = {
        "vigie_site": "ladder", "vigie_hub_url": hub_url, "vigie_maintenance_networks": ["10.20.0.0/24"],
        "vigie_firmware_dir": str(_firmware(tmp_path, "cam-7")), "vigie_manage_services": False,
        "agent_wheelhouse": str(wheelhouse), "agent_model_src": str(model_dir),
        "vigie_hub_cli": str(BIN / "vigie"), "vigie_hub_environment": hub_env,
        "camera_rtsp_user": "viewer", "camera_rtsp_password": "s3cret-rtsp",
    }  # fmt: skip
    inventory = _inventory(
        tmp_path,
        {"cam-7": {"ansible_connection": "community.general.chroot", "ansible_host": str(rootfs)}},
        common,
    )

    first = _play("provision.yml", inventory)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
    assert _recap(first.stdout, "cam-7")["changed"] > 10
    assert "s3cret-rtsp" not in first.stdout + first.stderr  # secrets stay out of the run's output

    # Users, files, units and venv are there.
    passwd = (rootfs / "etc" / "passwd").read_text()
    assert re.search(r"^vigie:x:\d+:\d+::/var/lib/vigie:/usr/sbin/nologin$", passwd, re.MULTILINE)
    assert "vigie" in next(line for line in (rootfs / "etc" / "group").read_text().splitlines()
                           if line.startswith("video:"))  # fmt: skip
    sshd = (rootfs / "etc" / "ssh" / "sshd_config.d" / "50-vigie.conf").read_text()
    assert "PasswordAuthentication no" in sshd
    assert "PermitRootLogin no" in sshd
    nft = (rootfs / "etc" / "nftables.conf").read_text()
    assert "elements = { 10.20.0.0/24 }" in nft
    assert "policy drop" in nft
    assert "8883" in nft
    assert "server 0.debian.pool.ntp.org iburst" in (rootfs / "etc/chrony/conf.d/vigie.conf").read_text()
    assert 'Unattended-Upgrade "1"' in (rootfs / "etc/apt/apt.conf.d/20auto-upgrades").read_text()
    unit = (rootfs / "etc/systemd/system/vigie-agent@.service").read_text()
    assert "WatchdogSec=60" in unit
    assert "MemoryMax=300M" in unit  # the generic-x86 profile's 250 MB budget, plus 20 %
    wants = rootfs / "etc/systemd/system/multi-user.target.wants"
    assert (wants / "vigie-agent@cam-7.service").is_symlink()
    assert (rootfs / "etc/systemd/system/sysinit.target.wants/nftables.service").is_symlink()
    assert (wants / "ssh.service").is_symlink()
    assert (wants / "chrony.service").is_symlink()
    assert (rootfs / "etc/systemd/system/timers.target.wants/vigie-health.timer").is_symlink()
    assert "SystemMaxUse=64M" in (rootfs / "etc/systemd/journald.conf.d/50-vigie.conf").read_text()
    camera_env = rootfs / "etc/vigie/camera.env"
    assert oct(camera_env.stat().st_mode & 0o777) == "0o640"
    # The venv's agent runs inside the device and validates the installed site file.
    run = subprocess.run(
        ["chroot", str(rootfs), "/opt/vigie/venv/bin/vigie", "config", "validate", "/etc/vigie/site.yaml"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert (rootfs / "var/lib/vigie/models/mobilenet_ssd_v2_coco_quant_postprocess.tflite").exists()
    assert (rootfs / "var/lib/vigie/models/face_detection_full_range.tflite").exists()  # snapshots need it
    # The venv holds exactly the lock file's versions, and vigie.
    assert venv_pins(rootfs) == {**lock_pins(LOCKS / "edge-x86_64.txt"), "vigie": "0.1.0"}
    # Only the picamera2 stack's venv sees the OS's packages; this V4L2/RTSP box's does not.
    assert "include-system-site-packages = false" in (rootfs / "opt/vigie/venv/pyvenv.cfg").read_text()

    # Enrolled: the key was made on the device, the certificate comes from the hub's CA.
    pki = rootfs / "etc/vigie/pki"
    assert oct((pki / "device.key").stat().st_mode & 0o777) == "0o640"
    assert not (pki / ".enrol-token").exists()
    cert = x509.load_pem_x509_certificate((pki / "device.crt").read_bytes())
    ca = x509.load_pem_x509_certificate(
        (Path(hub_env["VIGIE_HUB_STATE_DIR"]) / "pki" / "ca.crt").read_bytes()
    )
    cert.verify_directly_issued_by(ca)
    assert cert.subject.rfc4514_string().startswith("CN=ladder/cam-7")
    assert (
        json.loads((rootfs / "var/lib/vigie/ota/metadata/root.json").read_text())["signed"]["_type"] == "root"
    )
    devices = subprocess.run(cli("hub", "devices", "--json"), capture_output=True, text=True,
                             env={**os.environ, **hub_env}, check=True)  # fmt: skip
    assert [d["device"] for d in json.loads(devices.stdout)] == ["ladder/cam-7"]

    # Idempotent: a second run changes nothing.
    second = _play("provision.yml", inventory)
    assert second.returncode == 0, second.stdout[-6000:]
    recap = _recap(second.stdout, "cam-7")
    assert recap["changed"] == 0, [line for line in second.stdout.splitlines() if line.startswith("changed")]

    # Decommission: revoked on the hub, key shredded, data wiped.
    gone = _play("decommission.yml", inventory)
    assert gone.returncode == 0, gone.stdout[-6000:]
    devices = subprocess.run(cli("hub", "devices", "--json"), capture_output=True, text=True,
                             env={**os.environ, **hub_env}, check=True)  # fmt: skip
    assert json.loads(devices.stdout)[0]["enrolment"] == "revoked"
    for path in ("etc/vigie", "var/lib/vigie", "opt/vigie", "etc/systemd/system/vigie-agent@.service"):
        assert not (rootfs / path).exists(), path
    assert not (wants / "vigie-agent@cam-7.service").exists()


@pytest.mark.parametrize(
    ("problem", "host_vars", "expected"),
    [
        ("device missing from the site file", {"vigie_device": "cam-99"}, "has no camera with device cam-99"),
        ("bad device slug", {"vigie_device": "Cam 7"}, "must be a slug"),
        ("profile of another group", {"vigie_profile": "rpi5"}, "says profile generic-x86 for cam-7"),
        ("unknown profile", {"vigie_profile": "rpi3"}, "rpi3.yaml does not exist"),
    ],
)
def test_preflight_stops_a_bad_inventory_before_touching_the_device(
    tmp_path: Path, problem: str, host_vars: dict[str, str], expected: str
) -> None:
    untouched = tmp_path / "rootfs"
    untouched.mkdir()
    common = {
        "vigie_site": "ladder", "vigie_hub_url": "http://127.0.0.1:9",
        "vigie_maintenance_networks": ["10.0.0.0/8"],
        "vigie_firmware_dir": str(_firmware(tmp_path, "cam-7")),
    }  # fmt: skip
    host = {"ansible_connection": "community.general.chroot", "ansible_host": str(untouched), **host_vars}
    done = _play("provision.yml", _inventory(tmp_path, {"cam-7": host}, common), timeout=300)
    assert done.returncode != 0, problem
    assert expected in done.stdout, done.stdout[-3000:]
    assert "Check the inventory and the configuration" in done.stdout
    assert "PLAY [Provision the devices]" not in done.stdout
    assert list(untouched.iterdir()) == []
