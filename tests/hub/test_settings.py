"""The hub's settings: environment (old and new names), YAML file, precedence, and loud errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from hub.api.main import STARTUP_FAILURE, create_app
from hub.config import HubSettings
from hub.config_doc import BEGIN, END, settings_table
from hub.storage import Retention
from tests.conftest import ROOT
from vigie.exceptions import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No VIGIE_HUB_* or VIGIE_MQTT_* from the calling shell leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith(("VIGIE_HUB_", "VIGIE_MQTT_")):
            monkeypatch.delenv(name)
    return monkeypatch


def _yaml(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_are_the_old_ones() -> None:
    expected = {
        "db": "vigie-hub.sqlite", "ingest": True, "auth": True, "k": 5, "rate": 20, "h3_resolution": 8,
        "token_ttl_s": 8 * 3600, "fusion_every_s": 60, "purge_every_s": 3600, "device_rate": 100,
        "device_burst": 10_000, "client_id": "vigie-hub-ingest", "zones_name": "nom_qua",
        "broker_host": "localhost", "tls_port": 8883, "tls_bind": "0.0.0.0", "local_port": 1884,
        "state_dir": None, "zones": None, "config": None,
    }  # fmt: skip
    s = HubSettings.from_env()
    assert {name: getattr(s, name) for name in expected} == expected
    assert (s.broker.host, s.broker.port, s.broker.username, s.broker.password) == (
        "127.0.0.1",
        1883,
        None,
        None,
    )
    assert s.retention == Retention()


def test_old_names_keep_working(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    old = {
        "VIGIE_MQTT_HOST": "mq.example", "VIGIE_MQTT_PORT": "1884", "VIGIE_MQTT_USERNAME": "hub",
        "VIGIE_MQTT_PASSWORD": "s3cret", "VIGIE_MQTT_TLS_DIR": str(tmp_path / "pki"),
        "VIGIE_HUB_H3_RES": "9", "VIGIE_HUB_DPO": "dpo@example.org", "VIGIE_HUB_FUSION_EVERY": "30",
        "VIGIE_HUB_TOKEN_TTL": "600", "VIGIE_HUB_AUTH": "off", "VIGIE_HUB_INGEST": "0",
        "VIGIE_HUB_DB": "postgresql://vigie@db/vigie", "VIGIE_HUB_STATE_DIR": "",
        "VIGIE_HUB_ZONES": "z.geojson",
        "VIGIE_HUB_BROKER_HOST": "hub.example.org", "VIGIE_HUB_BROKER_USER": "root", "VIGIE_HUB_K": "3",
        "VIGIE_HUB_DEVICE_RATE": "20", "VIGIE_HUB_DEVICE_BURST": "300", "VIGIE_HUB_RATE": "500",
    }  # fmt: skip
    for name, value in old.items():
        clean_env.setenv(name, value)
    s = HubSettings.from_env()
    assert (s.broker.host, s.broker.port, s.broker.username, s.broker.password) == (
        "mq.example", 1884, "hub", "s3cret",
    )  # fmt: skip
    assert s.broker.tls_ca == tmp_path / "pki" / "ca.crt"
    assert s.broker.tls_key == tmp_path / "pki" / "device.key"
    assert (s.h3_resolution, s.dpo_contact, s.fusion_every_s) == (9, "dpo@example.org", 30)
    assert s.token_ttl_s == 600
    assert (s.auth, s.ingest, s.db, s.state_dir, s.zones) == (
        False, False, "postgresql://vigie@db/vigie", None, Path("z.geojson"),
    )  # fmt: skip
    # VIGIE_HUB_BROKER_HOST is what devices are told, not where the ingest connects (broker.host).
    assert (s.broker_host, s.broker_user, s.k) == ("hub.example.org", "root", 3)
    assert (s.device_rate, s.device_burst, s.rate) == (20, 300, 500)


@pytest.mark.parametrize(("value", "expected"), [("on", True), ("OFF", False), ("1", True), ("no", False)])
def test_booleans_parse_as_before(clean_env: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    clean_env.setenv("VIGIE_HUB_AUTH", value)
    assert HubSettings.from_env().auth is expected


def test_new_names_and_retention_from_env(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("VIGIE_HUB_H3_RESOLUTION", "10")
    clean_env.setenv("VIGIE_HUB_BROKER__PORT", "1999")
    clean_env.setenv("VIGIE_HUB_BROKER__PROTOCOL", "5")
    clean_env.setenv("VIGIE_HUB_RETENTION__EVENTS_DAYS", "7")
    clean_env.setenv("VIGIE_HUB_RETENTION__QUARANTINE_DAYS", "forever")
    clean_env.setenv("VIGIE_HUB_PURGE_EVERY_S", "60")
    s = HubSettings.from_env()
    assert (s.h3_resolution, s.broker.port, s.broker.protocol, s.purge_every_s) == (10, 1999, "5", 60)
    assert s.retention == Retention(events_days=7, rollups_days=730, quarantine_days=None)


def test_config_file_and_precedence(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = _yaml(tmp_path, {"k": 7, "rate": 50, "retention": {"events_days": 10}, "broker": {"host": "mq"}})
    from_file = HubSettings.from_env(config=path)
    assert (from_file.k, from_file.rate, from_file.config) == (7, 50, path)
    assert from_file.retention == Retention(events_days=10)  # the rest of retention keeps its defaults
    clean_env.setenv("VIGIE_HUB_CONFIG", str(path))
    clean_env.setenv("VIGIE_HUB_K", "4")
    clean_env.setenv("VIGIE_MQTT_PORT", "1884")
    s = HubSettings.from_env()
    assert (s.k, s.rate, s.broker.host, s.broker.port) == (4, 50, "mq", 1884)  # environment over file
    assert HubSettings.from_env(k=3).k == 3  # arguments (CLI flags) over the environment


@pytest.mark.parametrize(
    ("typo", "closest"),
    [
        ("VIGIE_HUB_RETENTON_DAYS", "VIGIE_HUB_RETENTION__EVENTS_DAYS"),
        ("VIGIE_HUB_H3RES", "VIGIE_HUB_H3_RES"),
        ("VIGIE_HUB_PURGE_EVERY", "VIGIE_HUB_PURGE_EVERY_S"),
        ("VIGIE_HUB_BROKER__HOTS", "VIGIE_HUB_BROKER__HOST"),
    ],
)
def test_unknown_variable_names_the_closest(clean_env: pytest.MonkeyPatch, typo: str, closest: str) -> None:
    clean_env.setenv(typo, "30")
    with pytest.raises(ConfigError) as caught:
        HubSettings.from_env()
    assert f"{typo}='30'" in str(caught.value)
    assert f"did you mean {closest}?" in str(caught.value)


def test_unknown_key_in_config_file(tmp_path: Path) -> None:
    path = _yaml(tmp_path, {"retention": {"event_days": 3}})
    unknown = r"unknown hub setting retention\.event_days: 3; did you mean events_days"
    with pytest.raises(ConfigError, match=unknown):
        HubSettings.from_env(config=path)
    with pytest.raises(ConfigError, match="not found"):
        HubSettings.from_env(config=tmp_path / "missing.yaml")


def test_invalid_values_name_the_setting(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("VIGIE_HUB_H3_RES", "99")
    clean_env.setenv("VIGIE_HUB_AUTH", "maybe")
    with pytest.raises(ConfigError) as caught:
        HubSettings.from_env(config=_yaml(tmp_path, {"k": 0}))
    message = str(caught.value)
    assert "VIGIE_HUB_H3_RES (environment) = '99': Input should be less than or equal to 15" in message
    assert "VIGIE_HUB_AUTH (environment) = 'maybe'" in message
    assert f"{tmp_path / 'hub.yaml'}: k = 0: Input should be greater than or equal to 3" in message
    assert "pydantic" not in message


def test_a_group_as_json(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("VIGIE_HUB_RETENTION", '{"events_days": 12}')
    assert HubSettings.from_env().retention == Retention(events_days=12)
    clean_env.setenv("VIGIE_HUB_RETENTION", "{12")
    with pytest.raises(ConfigError, match=r"retention.*must be JSON"):
        HubSettings.from_env()


def test_new_name_wins_over_the_tls_folder(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("VIGIE_MQTT_TLS_DIR", str(tmp_path))
    clean_env.setenv("VIGIE_HUB_BROKER__TLS_CA", "/etc/ssl/ca.pem")
    broker = HubSettings.from_env().broker
    assert (broker.tls_ca, broker.tls_cert) == (Path("/etc/ssl/ca.pem"), tmp_path / "device.crt")


def test_old_and_new_name_disagreeing_is_an_error(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("VIGIE_MQTT_PASSWORD", "pw-alpha")
    clean_env.setenv("VIGIE_HUB_BROKER__PASSWORD", "pw-beta")
    with pytest.raises(ConfigError, match=r"both set the hub's broker\.password") as caught:
        HubSettings.from_env()
    assert "pw-alpha" not in str(caught.value)  # passwords are never shown
    assert "pw-beta" not in str(caught.value)


def test_uvicorn_factory_fails_clearly(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("VIGIE_HUB_TOKEN_TTLS", "60")
    with pytest.raises(SystemExit) as caught:
        create_app()
    assert caught.value.code == STARTUP_FAILURE  # uvicorn's parent stops instead of restarting workers
    assert "vigie: error: unknown hub setting VIGIE_HUB_TOKEN_TTLS='60'" in capsys.readouterr().err


def test_routes_read_the_settings_from_env(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("VIGIE_HUB_DB", str(tmp_path / "hub.sqlite"))
    clean_env.setenv("VIGIE_HUB_INGEST", "0")
    clean_env.setenv("VIGIE_HUB_AUTH", "off")
    clean_env.setenv("VIGIE_HUB_RETENTION__ROLLUPS_DAYS", "365")
    with TestClient(create_app()) as client:
        body = client.get("/v1/gdpr/retention", headers={"X-Purpose": "settings test"}).json()
    assert body["policy"] == {"events_days": 90, "rollups_days": 365, "quarantine_days": 30}


def test_cli_reports_a_wrong_setting_without_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VIGIE_HUB_DEVICE_RATE": "fast"}
    done = subprocess.run(
        [sys.executable, "-m", "vigie", "hub", "ingest", "--db", str(tmp_path / "hub.sqlite")],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "vigie: error: invalid hub settings" in done.stderr
    assert "VIGIE_HUB_DEVICE_RATE (environment) = 'fast'" in done.stderr
    assert "Traceback" not in done.stderr


def test_doc_table_matches_the_model() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    table = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    stale = "docs/configuration.md is stale: paste the output of `python -m hub.config_doc` into it"
    assert table == settings_table(), stale


def test_doc_example_file_loads(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "configuration.md").read_text().split("## Hub settings", 1)[1]
    block = text.split("```yaml", 1)[1].split("```", 1)[0]
    path = tmp_path / "hub.yaml"
    path.write_text(block)
    s = HubSettings.from_env(config=path)
    assert s.retention.quarantine_days is None
    assert s.broker.port == 1884
