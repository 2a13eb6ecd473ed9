"""Run Python code as another user (``nobody``) from an install that user can read.

Why: the test command runs from a clone anywhere, often inside a 0700 folder (a ``mktemp -d``,
a home directory on recent Ubuntu). A process dropped to ``nobody`` can enter neither the clone
nor its ``.venv``, so it could not even import the project. It runs instead from a world-readable
copy of exactly the packages the code under test imports: the same source files and the same
compiled wheels, copied, not re-resolved; the child checks that it imported the copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

__all__ = ["as_nobody", "readable_install"]

DROP = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]

# Run by the test's own interpreter: which top-level packages (outside the standard library)
# does importing the module load, and from where.
_PROBE = """
import importlib, json, os, sys, sysconfig
std = sysconfig.get_path("stdlib")
before = set(sys.modules)
importlib.import_module(sys.argv[1])
tops = {}
for name in {n.split(".")[0] for n in set(sys.modules) - before} - set(sys.stdlib_module_names):
    top = sys.modules[name]
    where = list(getattr(top, "__path__", [])) or [getattr(top, "__file__", None)]
    if all(where) and not {os.path.dirname(w) for w in where} & {std, os.path.join(std, "lib-dynload")}:
        tops[name] = where
print(json.dumps(tops))
"""


def _copy_readable(src: Path, dest: Path) -> None:
    """Copy a package (folder or single module) and make it readable by every user."""
    if src.is_dir():
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        for path in [dest, *dest.rglob("*")]:
            path.chmod(path.stat().st_mode | (0o555 if path.is_dir() else 0o444))
    else:
        shutil.copy2(src, dest)
        dest.chmod(dest.stat().st_mode | 0o444)


def readable_install(module: str, dest: Path) -> Path:
    """Copy into ``dest`` every non-standard package that importing ``module`` loads."""
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, module], capture_output=True, text=True, timeout=120, check=True
    )
    dest.mkdir(parents=True, exist_ok=True)
    dest.chmod(0o755)
    for top, locations in json.loads(probe.stdout).items():
        for location in map(Path, locations):
            src = location.parent if location.name == "__init__.py" else location
            _copy_readable(src, dest / src.name)
            # Wheels built by auditwheel keep their shared libraries beside the package.
            for libs in src.parent.glob(f"{top}.libs"):
                _copy_readable(libs, dest / libs.name)
    return dest


def _interpreters() -> Iterable[str]:
    """The test's own base interpreter first, then system ones of the same version."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = getattr(sys, "_base_executable", sys.executable)
    yield os.path.realpath(base)
    for candidate in (shutil.which(f"python{version}"), f"/usr/bin/python{version}"):
        if candidate:
            yield os.path.realpath(candidate)


def _nobody_python() -> str:
    """A Python of the test's own version that ``nobody`` can run (the venv's may be unreachable)."""
    want = f"{sys.version_info.major}.{sys.version_info.minor}"
    check = "import sys; print(f'{sys.version_info.major}.{sys.version_info.minor}')"
    for exe in dict.fromkeys(_interpreters()):
        done = subprocess.run([*DROP, exe, "-I", "-c", check], capture_output=True, text=True, timeout=30)
        if done.returncode == 0 and done.stdout.strip() == want:
            return exe
    pytest.skip(f"no Python {want} that user nobody can run (install python{want} from the OS packages)")


def as_nobody(code: str, install: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as ``nobody`` with only ``install`` (and the standard library) importable."""
    # -I: no PYTHONPATH, no user site, no current folder; the readable copy comes first.
    prelude = f"import sys; sys.path.insert(0, {str(install)!r}); "
    return subprocess.run(
        [*DROP, _nobody_python(), "-I", "-B", "-c", prelude + code, *args],
        capture_output=True, text=True, timeout=60, check=False, cwd="/",
    )  # fmt: skip
