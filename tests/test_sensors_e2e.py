"""Sensors through the whole path: agent → Mosquitto → hub → GET /v1/…, with a sensor unplugged mid-run."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import msgpack
import pytest

from edge.outbox import Outbox
from tests.conftest import Hub, cli, need_service
from vigie import wire
from vigie.broker import LocalBroker
from vigie.netutil import free_port

pytestmark = pytest.mark.e2e

SITE = """
site: street
anonymisation: {{window_s: 10, k: 3}}
cameras:
  - device: box-1
    profile: generic-x86
    source: {photo}
    loop: true
    fps_cap: 2
    threads: 1
    sensors:
      - {{type: sht31, id: air, bus: simulated, period_s: 1, simulate_unplug_after_s: 4}}
      - {{type: pms5003, id: dust, port: simulated, period_s: 1}}
      - {{type: sound_wav, id: mic, path: {wav}, calibration_db: 100, realtime: true, loop: true}}
"""


def run_for(seconds: float, site: Path, model_dir: Path, port: int, outbox: Path, log: Path) -> None:
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            cli("edge", "run", "--config", str(site), "--device", "box-1", "--model-dir", str(model_dir),
                "--broker", f"127.0.0.1:{port}", "--outbox", str(outbox)),
            stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
    time.sleep(seconds)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.fixture
def site(tmp_path: Path, bus_jpg: Path) -> Path:
    need_service(shutil.which("sox") is not None, "sox (apt-get install sox)")
    wav = tmp_path / "street.wav"
    subprocess.run(["sox", "-n", "-r", "16000", "-b", "16", "-c", "1", str(wav), "synth", "3", "pinknoise",
                    "vol", "0.05"], check=True)  # fmt: skip
    path = tmp_path / "site.yaml"
    path.write_text(SITE.format(photo=bus_jpg, wav=wav))
    return path


def test_sensor_windows_reach_the_api_and_an_unplugged_sensor_is_reported(
    hub: Hub, broker: LocalBroker, site: Path, model_dir: Path, tmp_path: Path
) -> None:
    run_for(16, site, model_dir, broker.port, tmp_path / "o.sqlite", tmp_path / "agent.log")
    body = hub.wait_for("/v1/events?kind=measurement&limit=1000", lambda r: r["count"] >= 5, timeout=30)
    by = {(m["sensor"], m["quantity"]): m for m in body["data"]}
    assert ("dust", "pm2_5") in by
    assert by[("dust", "pm2_5")]["stats"]["mean"] == 12.0
    assert by[("mic", "sound_level")]["unit"] == "dB(A)"
    assert set(by[("mic", "sound_level")]["stats"]) == {"laeq", "lamax", "la90", "impulses"}
    assert 40 < by[("mic", "sound_level")]["stats"]["laeq"] < 90
    assert ("air", "temperature") in by  # read before it was unplugged
    # The unplug shows in the heartbeat; the camera kept publishing after it.
    (device,) = hub.wait_for("/v1/devices", lambda r: r["count"] == 1 and r["data"][0]["heartbeat"])["data"]
    assert device["heartbeat"]["sensors"] == {"air": "silent", "dust": "ok", "mic": "ok"}
    counts = hub.get("/v1/events?kind=zone_count&limit=1000")["data"]
    unplugged_at = min(m["window_start"] for m in body["data"]) + 4
    assert any(c["window_start"] + c["window_s"] > unplugged_at + 5 for c in counts)
    assert all(c["counts"].get("bus") == "<5" for c in counts)  # one bus: under the hub's k
    # And the roll-ups carry the covariates for the fusion layer.
    rollups = hub.get("/v1/rollups?metric=sound_level:*")["data"]
    assert {r["metric"] for r in rollups} >= {"sound_level:laeq", "sound_level:la90"}


def test_no_audio_in_the_outbox_on_disk(site: Path, model_dir: Path, tmp_path: Path) -> None:
    outbox = tmp_path / "o.sqlite"
    # No broker at all: everything the agent would send stays on disk, for us to read.
    run_for(14, site, model_dir, free_port(), outbox, tmp_path / "agent.log")
    rows = Outbox(outbox).peek(10_000)
    assert any(msgpack.unpackb(r.payload)["kind"] == "measurement" for r in rows)
    for row in rows:
        assert len(row.payload) < 1024
        message = wire.decode(row.payload)  # only v1 messages, whole, on disk
        body = msgpack.unpackb(row.payload)
        assert not any(isinstance(v, bytes | list) for v in body.values())
        if isinstance(message, wire.Measurement):
            assert all(isinstance(v, float) for v in body["stats"].values())
