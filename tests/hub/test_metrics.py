"""Prometheus: the hub's /metrics, the shipped alert rules under promtool, a real Prometheus scraping it."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from hub.metrics import STREAM_CLIENTS, counted_stream, device_metrics, ingest_metrics
from tests.conftest import ROOT, Hub, need_service
from vigie import wire
from vigie.broker import LocalBroker
from vigie.netutil import free_port, wait_for_port

RULES = ROOT / "ops" / "prometheus"


def _beat(device: str, ts: int, **over: Any) -> wire.Heartbeat:
    body: dict[str, Any] = {
        "site": "lyon", "device": device, "ts": ts - ts % 10, "agent_version": "0.1.0", "model": "m@1",
        "uptime_s": 60, "fps": 4.5, "inference_p50_ms": 17.0, "inference_p95_ms": 21.0, "cpu_percent": 40.0,
        "rss_mb": 180.0, "disk_free_mb": 5000.0, "cpu_temp_c": 61.5, "outbox_depth": 3, "outbox_dropped": 0,
        "sensors": {"noise": "ok", "air": "silent"},
    }  # fmt: skip
    return wire.Heartbeat(**{**body, **over})


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_device_and_ingest_families_are_labelled_per_device_and_worker() -> None:
    now = 1_700_000_100.0
    devices = [
        {"site": "lyon", "device": "cam-1", "last_seen": now - 42, "status": "online",
         "heartbeat": _beat("cam-1", int(now)).model_dump(mode="json")},
        {"site": "lyon", "device": "cam-2", "last_seen": now - 900, "status": "offline", "heartbeat": None},
    ]  # fmt: skip
    by = {f.name: f for f in device_metrics(devices, now)}
    assert [(s.labels, s.value) for s in by["vigie_device_fps"].samples] == [
        ({"site": "lyon", "device": "cam-1"}, 4.5)
    ]
    assert {s.labels["device"]: s.value for s in by["vigie_device_last_seen_seconds"].samples} == {
        "cam-1": 42.0,
        "cam-2": 900.0,
    }
    assert {s.labels["device"]: s.value for s in by["vigie_device_online"].samples} == {
        "cam-1": 1,
        "cam-2": 0,
    }
    assert {s.labels["sensor"]: s.value for s in by["vigie_device_sensor_ok"].samples} == {
        "noise": 1,
        "air": 0,
    }
    assert by["vigie_device_problem"].samples == []
    devices[0]["heartbeat"]["problems"] = {"camera": "camera unavailable"}
    (problem,) = next(f for f in device_metrics(devices, now) if f.name == "vigie_device_problem").samples
    assert problem.labels == {"site": "lyon", "device": "cam-1", "kind": "camera"}
    workers = [{"worker": "w1", "updated_at": now - 3, "connected": True, "received": 10, "stored": 8,
                "quarantined": 2, "quarantine_reasons": {"counts": 2}, "lag_s": 12.5}]  # fmt: skip
    ing = {f.name: f for f in ingest_metrics(workers, now)}
    assert ing["vigie_ingest_stored"].samples[0].value == 8
    assert ing["vigie_ingest_quarantined_by_field"].samples[0].labels == {"worker": "w1", "field": "counts"}
    assert ing["vigie_ingest_lag_seconds"].samples[0].value == 12.5
    assert ing["vigie_ingest_status_age_seconds"].samples[0].value == pytest.approx(3)


def test_stream_clients_are_counted_while_connected() -> None:
    async def feed() -> Any:
        yield "a"
        yield "b"

    async def consume() -> list[float]:
        seen = []
        async for _ in counted_stream(feed()):
            seen.append(STREAM_CLIENTS._value.get())
        return seen

    before = STREAM_CLIENTS._value.get()
    assert asyncio.run(consume()) == [before + 1, before + 1]
    assert STREAM_CLIENTS._value.get() == before


def _promtool() -> str:
    tool = shutil.which("promtool")
    need_service(tool is not None, "promtool (Debian package prometheus)")
    assert tool is not None
    return tool


def test_shipped_alert_rules_pass_promtool() -> None:
    tool = _promtool()
    check = subprocess.run([tool, "check", "rules", "alerts.yml"], cwd=RULES, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        [tool, "test", "rules", "alerts_test.yml"], cwd=RULES, capture_output=True, text=True
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr
    assert "SUCCESS" in unit.stdout


def _publish(port: int, messages: list[wire.Message]) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-metrics")
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        for m in messages:
            channel = wire.Channel.STATUS if isinstance(m, wire.Status) else wire.Channel.HEARTBEAT
            info = c.publish(wire.topic(m.site, m.device, channel), wire.encode(m), qos=1)
            info.wait_for_publish(5)
    finally:
        c.loop_stop()
        c.disconnect()


@pytest.fixture
def prometheus(tmp_path: Path, hub: Hub) -> Iterator[str]:
    """A real Prometheus scraping the hub every second, with the shipped rules (one changed, see below)."""
    need_service(shutil.which("prometheus") is not None, "prometheus (Debian package)")
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == "VigieDeviceOffline":
                # The shipped 5 minutes, shortened so that the test sees it fire: the expression is
                # the shipped one, only the wait differs.
                rule["for"] = "3s"
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    target = hub.url.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "scrape_configs": [{"job_name": "vigie-hub", "static_configs": [{"targets": [target]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert wait_for_port(port, timeout=30), (tmp_path / "prometheus.log").read_text()
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def _api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (a local test server)
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]


def _until(what: str, probe: Any, timeout: float = 40.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: never seen; last answer {last}")


@pytest.mark.e2e
def test_prometheus_scrapes_the_hub_and_an_offline_device_fires(
    hub: Hub, broker: LocalBroker, prometheus: str
) -> None:
    now = int(time.time())
    online = wire.Status(site="lyon", device="cam-1", ts=now, state="online")
    _publish(broker.port, [online, _beat("cam-1", now)])
    hub.wait_for("/v1/devices", lambda r: r["count"] == 1 and r["data"][0]["heartbeat"])
    with urllib.request.urlopen(hub.url + "/metrics", timeout=5) as resp:  # noqa: S310
        text = resp.read().decode()
    samples = _samples(text)
    who = frozenset({("site", "lyon"), ("device", "cam-1")})
    assert samples[("vigie_device_fps", who)] == 4.5
    assert samples[("vigie_device_temperature_celsius", who)] == 61.5
    # Latency by route template: the /v1/devices calls above (hub.wait_for).
    route = frozenset({("route", "/v1/devices"), ("method", "GET"), ("status", "2xx")})
    assert samples[("vigie_api_request_seconds_count", route)] >= 1

    fps = _until("vigie_device_fps in Prometheus", lambda: _api(prometheus, "/api/v1/query",
                 query='vigie_device_fps{device="cam-1"}')["result"])  # fmt: skip
    assert float(fps[0]["value"][1]) == 4.5
    # The ingest worker reports its counters to the store every 5 s.
    query = "vigie_ingest_heartbeats_total >= 1"
    _until("the ingest counters", lambda: _api(prometheus, "/api/v1/query", query=query)["result"])
    alerts = _api(prometheus, "/api/v1/alerts")["alerts"]
    assert not [a for a in alerts if a["labels"]["alertname"] == "VigieDeviceOffline"]

    # The broker's last will (or a clean stop) marks the device offline: the alert fires after `for`.
    _publish(broker.port, [wire.Status(site="lyon", device="cam-1", ts=now + 1, state="offline")])
    firing = _until("VigieDeviceOffline firing", lambda: [
        a for a in _api(prometheus, "/api/v1/alerts")["alerts"]
        if a["labels"]["alertname"] == "VigieDeviceOffline" and a["state"] == "firing"
    ])  # fmt: skip
    assert firing[0]["labels"]["device"] == "cam-1"


def test_multiprocess_mode_sums_the_workers(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, a scrape sees the API latency recorded by every worker process."""
    import os
    import sys

    folder = tmp_path / "prom"
    folder.mkdir()
    worker = (
        "from hub.metrics import API_SECONDS; API_SECONDS.labels('/v1/devices', 'GET', '2xx').observe(0.01)"
    )
    scrape = (
        "import sys; from hub.metrics import render; from hub.storage import open_store; "
        f"sys.stdout.write(render(open_store({str(tmp_path / 'hub.sqlite')!r}), None).decode())"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", worker], env=env, check=True, timeout=60)
    out = subprocess.run([sys.executable, "-c", scrape], env=env, check=True, timeout=60, capture_output=True)
    labels = frozenset({("route", "/v1/devices"), ("method", "GET"), ("status", "2xx")})
    assert _samples(out.stdout.decode())[("vigie_api_request_seconds_count", labels)] == 2
