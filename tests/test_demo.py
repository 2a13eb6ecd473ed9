"""`vigie demo` for a minute: events from both agents visible at /v1/events, then a clean stop."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import cli, need_service
from vigie.broker import find_mosquitto
from vigie.netutil import free_port, wait_for_port

pytestmark = pytest.mark.demo


def _anonymous_connect(port: int) -> str:
    """The broker's answer to a client with no username: its CONNACK reason, or "no answer"."""
    import paho.mqtt.client as mqtt

    answer: list[str] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="anonymous-probe")
    client.on_connect = lambda c, u, f, reason, p: answer.append(str(reason))
    client.connect("127.0.0.1", port)
    client.loop_start()
    deadline = time.monotonic() + 5
    while not answer and time.monotonic() < deadline:
        time.sleep(0.05)
    client.loop_stop()
    client.disconnect()
    return answer[0] if answer else "no answer"


def test_demo_runs_for_a_minute(model_dir: Path, vtest_avi: Path, tmp_path: Path) -> None:
    need_service(find_mosquitto() is not None, "mosquitto")
    port, broker_port = free_port(), free_port()
    proc = subprocess.Popen(
        cli(
            "demo",
            "--duration",
            "60",
            "--port",
            str(port),
            "--broker-port",
            str(broker_port),
            "--footage",
            str(vtest_avi),
            "--model-dir",
            str(model_dir),
            "--workdir",
            str(tmp_path),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    devices: set[str] = set()
    events = 0
    anonymous: list[object] = []
    libraries: list[int] = []
    try:
        deadline = time.monotonic() + 75
        while time.monotonic() < deadline and proc.poll() is None:
            if not anonymous and wait_for_port(broker_port, timeout=0.1):
                anonymous.append(_anonymous_connect(broker_port))
            try:
                token = (tmp_path / "api-token").read_text()
                url = f"http://127.0.0.1:{port}/v1/events?limit=1000"
                request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(request, timeout=3) as r:  # noqa: S310 (http on loopback)
                    body = json.loads(r.read())
                devices = {e["device"] for e in body["data"]}
                events = body["count"]
                if not libraries:  # the dashboard's map library, the hub's own copy (issue 20)
                    lib = f"http://127.0.0.1:{port}/static/vendor/leaflet/dist/leaflet.js"
                    with urllib.request.urlopen(lib, timeout=3) as r:
                        libraries.append(len(r.read()))
            except OSError:
                pass
            time.sleep(2)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    # Issue 17: the demo's broker refuses anonymous clients (they could forge receipts).
    assert anonymous, "the broker never came up"
    assert anonymous[0] == "Not authorized", anonymous
    assert devices == {"cam-1", "cam-2"}, out
    assert events >= 6  # 10 s windows over a minute: cam-1 one zone, cam-2 two zones
    assert "http://127.0.0.1:" in out
    assert "/v1/events" in out
    assert "/dashboard/   log in as demo / " in out
    assert "stopped" in out
    assert libraries, "the demo's hub did not serve Leaflet"
    assert libraries[0] > 100_000
    # Everything it started is gone.
    assert not wait_for_port(port, timeout=0.5)
    assert not wait_for_port(broker_port, timeout=0.5)
