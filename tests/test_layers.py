"""Floors that only look down: the import contracts hold, and each one fails on a planted wrong import.

`lint-imports` reads ``[tool.importlinter]`` from ``pyproject.toml``. A contract that could
not fail would prove nothing, so each planted import below must break it: a copy of the four
packages with one extra module is linted, and the run must fail and name the contract.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("vigie", "edge", "hub", "ota")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on ``tree`` (its pyproject and packages), nothing else on the path."""
    lint = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(lint), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _copy_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tree


def test_the_contracts_hold_on_this_tree() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "planted", "contract"),
    [
        # The edge reaching for the hub, directly or through a function-local import.
        (
            "edge/planted.py",
            "def f() -> None:\n    import hub.disclosure  # noqa\n",
            "The edge never imports the hub",
        ),
        # The core importing an application.
        ("vigie/files.py", "from vigie.cli import main  # noqa\n", "Floors"),
        # The core importing the hub (a core helper that grew a storage dependency).
        ("vigie/files.py", "def g() -> None:\n    import hub.storage  # noqa\n", "Floors"),
        # OTA (below the sides) importing the edge.
        ("ota/planted.py", "import edge.outbox  # noqa\n", "Floors"),
        # The analysts' client reaching for the hub (it must install without it: issue 20).
        ("vigie/client.py", "def h() -> None:\n    import hub.api  # noqa\n", "Floors"),
        # The hub importing the edge: the two sides stay independent.
        ("hub/planted.py", "import edge.rules  # noqa\n", "Floors"),
    ],
)
def test_a_planted_wrong_import_breaks_a_contract(
    tmp_path: Path, module: str, planted: str, contract: str
) -> None:
    tree = _copy_tree(tmp_path)
    target = tree / module
    target.write_text((target.read_text() + "\n" if target.exists() else "") + planted)
    result = _lint(tree)
    assert result.returncode != 0, f"planting {planted!r} in {module} broke no contract:\n{result.stdout}"
    verdicts = [line for line in result.stdout.splitlines() if line.startswith(contract)]
    assert verdicts, result.stdout
    assert verdicts[0].endswith("BROKEN"), f"expected {contract!r} broken:\n{result.stdout}"


APPLICATIONS = {"__init__", "__main__", "cli", "demo", "sim", "broker", "nats_cluster"}


def test_every_core_module_is_on_the_core_floor() -> None:
    """A new module in ``vigie/`` is either an application or named in the core layer.

    The layers contract checks the modules it names; a core module missing from the list
    could import an application unseen. This closes that gap.
    """
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    floors = next(c for c in config["contracts"] if c["id"] == "floors")
    core = {name.strip() for name in floors["layers"][-1].split(":")}
    modules = {
        p.stem for p in (ROOT / "vigie").iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()
    }
    missing = {f"vigie.{m}" for m in modules - APPLICATIONS} - core
    assert not missing, f"add {sorted(missing)} to the core layer in pyproject.toml (or to APPLICATIONS here)"
