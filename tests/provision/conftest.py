"""What the provisioning tests share: the lock files, and a wheelhouse made from one."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

LOCKS = ROOT / "requirements"


def lock_pins(lock: Path) -> dict[str, str]:
    """``name: version`` of every package a lock file pins (names normalised as pip compares them)."""
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ \\;]+)", lock.read_text(), re.MULTILINE)
    return {_canonical(name): version for name, version in pins}


def freeze_pins(freeze: str) -> dict[str, str]:
    """``pip freeze`` output as ``name: version``."""
    pins = (line.split("==", 1) for line in freeze.splitlines() if "==" in line and not line.startswith("#"))
    return {_canonical(name): version.strip() for name, version in pins}


def venv_pins(rootfs: Path) -> dict[str, str]:
    """What ``pip freeze`` says the agent's venv in a root filesystem holds.

    ``--local``: a venv with ``--system-site-packages`` (the Pi's, for picamera2) also sees the OS's
    Python packages (python3-apt, ...); those are apt's, not the lock file's.
    """
    pip = ["chroot", str(rootfs), "/opt/vigie/venv/bin/python", "-m", "pip"]
    freeze = subprocess.run([*pip, "freeze", "--local"], capture_output=True, text=True, timeout=600)
    assert freeze.returncode == 0, freeze.stderr
    return freeze_pins(freeze.stdout)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_wheelhouse(folder: Path, lock: Path, *platform_args: str) -> Path:
    """The lock file's wheels (hashes checked by pip) and vigie's, as a technician carries them."""
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "--wheel-dir", str(folder), str(ROOT)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    subprocess.run(
        [*pip, "download", "-q", "--require-hashes", "--only-binary=:all:", "--no-deps", *platform_args,
         "--dest", str(folder), "-r", str(lock)],
        check=True, capture_output=True, timeout=900,
    )  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The x86-64 lock file's wheels and vigie's, as a technician's laptop carries them."""
    return locked_wheelhouse(tmp_path_factory.mktemp("wheelhouse"), LOCKS / "edge-x86_64.txt")
