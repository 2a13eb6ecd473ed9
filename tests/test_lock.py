"""The lock files (requirements/, written by scripts/lock): complete, hashed, in step with pyproject.toml,
and what this test environment really runs.

The provisioned boxes are checked against them in tests/provision (``pip freeze`` of the box's venv
equals the edge lock file of its machine).
"""

from __future__ import annotations

import platform
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from tests.conftest import ROOT

LOCKS = ROOT / "requirements"
MACHINES = ("x86_64", "aarch64")
LOCKED = [("edge", m) for m in MACHINES] + [("hub", "x86_64"), ("dev", "x86_64")]
# name==version, then --hash lines: a package without a hash does not match.
ENTRY = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\\n((?:\s+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", re.M
)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    return {_canonical(m.group(1)): m.group(2) for m in ENTRY.finditer(path.read_text())}


def _requirements(extra: str, machine: str) -> list[Requirement]:
    """vigie[extra]'s requirements for Linux on that machine with Python 3.11, extras expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = {
        **default_environment(),
        "platform_machine": machine,
        "sys_platform": "linux",
        "python_version": "3.11",
    }
    out: list[Requirement] = []
    todo = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"][extra]]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        if _canonical(req.name) == "vigie":  # vigie[edge,hub,provision]: the other extras
            todo += [Requirement(r) for e in req.extras for r in project["optional-dependencies"][e]]
            continue
        out.append(req)
    return out


@pytest.mark.parametrize(("extra", "machine"), LOCKED)
def test_every_line_is_pinned_and_hashed(extra: str, machine: str) -> None:
    text = (LOCKS / f"{extra}-{machine}.txt").read_text()
    packages = [line for line in text.splitlines() if line and not line[0].isspace() and line[0] != "#"]
    assert packages, f"{extra}-{machine}.txt pins nothing"
    assert len(_pins(LOCKS / f"{extra}-{machine}.txt")) == len(packages), (
        "a package without ==version or hash"
    )


@pytest.mark.parametrize(("extra", "machine"), LOCKED)
def test_the_lock_satisfies_pyproject(extra: str, machine: str) -> None:
    """A bound changed in pyproject.toml without `scripts/lock` being run fails here, naming the package."""
    pins = _pins(LOCKS / f"{extra}-{machine}.txt")
    for req in _requirements(extra, machine):
        name = _canonical(req.name)
        assert name in pins, (
            f"{req} (pyproject.toml, vigie[{extra}]) is not in {extra}-{machine}.txt: run scripts/lock"
        )
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{extra}-{machine}.txt pins {name}=={pins[name]}, outside pyproject's {req}: run scripts/lock"
        )


def test_the_hub_lock_leaves_the_demo_out() -> None:
    """A production hub gets neither the demo's fallback broker nor the report's plotting."""
    pins = _pins(LOCKS / "hub-x86_64.txt")
    assert {"fastapi", "uvicorn", "psycopg", "h3"} <= pins.keys()
    assert not {"amqtt", "matplotlib"} & pins.keys()
    assert {"amqtt", "matplotlib"} <= _pins(LOCKS / "dev-x86_64.txt").keys()


def test_the_edge_locks_pin_the_runtime_for_each_machine() -> None:
    for machine in MACHINES:
        pins = _pins(LOCKS / f"edge-{machine}.txt")
        assert {"ai-edge-litert", "numpy", "opencv-python-headless"} <= pins.keys(), machine
        assert "matplotlib" not in pins  # the box gets the agent's needs, not the hub's
        assert "fastapi" not in pins


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the dev lock is for x86-64 machines")
def test_this_environment_runs_the_dev_lock() -> None:
    """scripts/bootstrap installs the dev environment from requirements/dev-x86_64.txt: pip freeze agrees."""
    installed = {_canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
    pins = _pins(LOCKS / "dev-x86_64.txt")
    wrong = {name: (want, installed.get(name)) for name, want in pins.items() if installed.get(name) != want}
    assert not wrong, f"(locked, installed) differ; run scripts/bootstrap: {wrong}"
