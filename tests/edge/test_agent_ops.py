"""The agent as a service: SIGHUP reload, kill -9 without loss or duplicates, sd_notify, snapshots."""

from __future__ import annotations

import configparser
import os
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.faces import FaceDetector
from edge.outbox import Outbox
from edge.sdnotify import Notifier
from edge.snapshot import purge_snapshots
from tests.conftest import ROOT, Hub, cli
from vigie.broker import LocalBroker

pytestmark = pytest.mark.e2e

SITE = """
site: test
anonymisation: {{window_s: 10}}
cameras:
  - device: cam-1
    profile: generic-x86
    source: {source}
    loop: true
    fps_cap: {fps}
    zones:
      - {{name: {zone}, polygon: [[0, 0], [1, 0], [1, 1], [0, 1]]}}
"""


def agent(
    site: Path, broker: LocalBroker, model_dir: Path, outbox: Path, log: Path
) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            cli("edge", "run", "--config", str(site), "--device", "cam-1", "--model-dir", str(model_dir),
                "--broker", f"127.0.0.1:{broker.port}", "--outbox", str(outbox)),
            stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip


def zones_seen(hub: Hub) -> set[str]:
    return {e.get("zone") for e in hub.get("/v1/events?limit=1000")["data"]}


def test_sighup_reloads_zones_without_a_restart(
    hub: Hub, broker: LocalBroker, model_dir: Path, vtest_avi: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(SITE.format(source=vtest_avi, fps=20, zone="before"))
    log = tmp_path / "agent.log"
    proc = agent(site, broker, model_dir, tmp_path / "o.sqlite", log)
    try:
        hub.wait_for("/v1/events", lambda r: r["count"] >= 1, timeout=30)
        site.write_text(SITE.format(source=vtest_avi, fps=20, zone="after"))
        pid_before = proc.pid
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "after" not in zones_seen(hub) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "after" in zones_seen(hub), log.read_text()
        assert proc.poll() is None
        assert proc.pid == pid_before
        # A broken file on the next reload is refused; the agent goes on with what it had.
        site.write_text("site: test\ncameras: [{device: cam-1, profile: nope, source: x}]\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(2)
        assert proc.poll() is None
        assert "new configuration refused" in log.read_text()
        assert "hardware profile 'nope' not found" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_kill_9_loses_nothing_and_duplicates_nothing(
    hub: Hub, broker: LocalBroker, model_dir: Path, vtest_avi: Path, bus_jpg: Path, tmp_path: Path
) -> None:
    outbox = tmp_path / "o.sqlite"
    log = tmp_path / "agent.log"
    broker.stop()  # events pile up in the outbox; the agent is killed while writing them
    site = tmp_path / "site.yaml"
    site.write_text(SITE.format(source=vtest_avi, fps=1000, zone="all"))
    proc = agent(site, broker, model_dir, outbox, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (outbox.exists() and Outbox(outbox).depth() >= 2):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    pending = Outbox(outbox).depth()
    assert pending >= 2
    from vigie.broker import start_broker

    restarted = start_broker(broker.log_path.parent, broker.port)
    try:
        # Restart on one photo: the agent first delivers what the killed one left, then one new event.
        site.write_text(SITE.format(source=bus_jpg, fps=5, zone="all").replace("loop: true", "loop: false"))
        rerun = subprocess.run(
            cli("edge", "run", "--config", str(site), "--device", "cam-1", "--model-dir", str(model_dir),
                "--broker", f"127.0.0.1:{broker.port}", "--outbox", str(outbox), "--drain-timeout", "60"),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert rerun.returncode == 0, rerun.stderr
        body = hub.wait_for("/v1/events", lambda r: r["count"] >= pending + 1, timeout=60)
        time.sleep(1.0)
        body = hub.get("/v1/events?limit=1000")
        ids = [e["id"] for e in body["data"]]
        assert len(ids) == pending + 1  # every event the killed agent committed, plus the new one
        assert len(set(ids)) == len(ids)
        assert Outbox(outbox).depth() == 0
    finally:
        restarted.stop()


def test_sd_notify_ready_watchdog_stopping(
    hub: Hub, broker: LocalBroker, model_dir: Path, bus_jpg: Path, tmp_path: Path
) -> None:
    # The hub is there to receipt the event: without it the agent would exit with it still pending.
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}
    proc = subprocess.run(
        cli("edge", "run", "--site", "test", "--device", "cam-1", "--source", str(bus_jpg),
            "--model-dir", str(model_dir), "--broker", f"127.0.0.1:{broker.port}",
            "--outbox", str(tmp_path / "o.sqlite")),
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    sock.settimeout(0.5)
    messages: list[str] = []
    try:
        while True:
            messages.append(sock.recv(4096).decode())
    except TimeoutError:
        pass
    sock.close()
    text = "\n".join(messages)
    assert "READY=1" in text
    assert "WATCHDOG=1" in text
    assert text.rstrip().endswith("STOPPING=1")


def test_without_receipts_the_agent_sends_again_after_resend_after(
    broker: LocalBroker, model_dir: Path, bus_jpg: Path, tmp_path: Path
) -> None:
    """No hub: nothing is receipted, so the event goes out again after 1 s, then 2 s, 4 s (doubling)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from vigie import wire

    deliveries: list[str] = []
    subscribed = threading.Event()
    tap = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="resend-tap")
    tap.on_subscribe = lambda *a: subscribed.set()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        event = wire.decode(bytes(message.payload), wire.Channel.EVENT)
        assert isinstance(event, wire.Event)
        deliveries.append(event.id)

    tap.on_message = on_message
    tap.connect("127.0.0.1", broker.port)
    tap.subscribe(wire.topic("test", "cam-1", wire.Channel.EVENT), qos=1)
    tap.loop_start()
    assert subscribed.wait(5)
    try:
        proc = subprocess.run(
            cli("edge", "run", "--site", "test", "--device", "cam-1", "--source", str(bus_jpg),
                "--model-dir", str(model_dir), "--broker", f"127.0.0.1:{broker.port}",
                "--outbox", str(tmp_path / "o.sqlite"), "--resend-after", "1", "--drain-timeout", "8"),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        tap.loop_stop()
        tap.disconnect()
    assert proc.returncode == 3, proc.stderr  # 3: events left in the outbox for the next start
    assert "no receipt from the hub; sending again" in proc.stderr
    assert deliveries, proc.stderr
    for event_id in set(deliveries):
        # at 0 s, ~1 s, ~3 s and ~7 s: three are due well inside the 8 s drain even on a loaded machine
        assert deliveries.count(event_id) >= 3
    assert Outbox(tmp_path / "o.sqlite").depth() == len(set(deliveries))  # kept until a hub receipts them


def test_notifier_is_silent_outside_systemd() -> None:
    n = Notifier(socket_path="")
    assert not n.enabled
    assert n.notify("READY=1") is False


def test_systemd_unit_uses_notify_watchdog_and_restart() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    # The unit is the Ansible role's template (rendered and checked on a real rootfs in tests/provision).
    unit.read(ROOT / "ansible" / "roles" / "agent" / "templates" / "vigie-agent@.service.j2")
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert service["WatchdogSec"] == "{{ agent_watchdog_s }}"
    assert service["Restart"] == "always"
    assert "-HUP" in service["ExecReload"]
    assert "edge run --config" in service["ExecStart"]


def test_snapshot_blurs_faces_and_stays_private(model_dir: Path, zidane_jpg: Path, tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(SITE.format(source=zidane_jpg, fps=5, zone="pitch").replace("loop: true", "loop: false"))
    out = tmp_path / "snaps"
    proc = subprocess.run(
        cli("edge", "snapshot", "--config", str(site), "--device", "cam-1", "--model-dir", str(model_dir),
            "--face-model", str(model_dir / "face_detection_full_range.tflite"), "--snapshot-dir", str(out)),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (snap,) = out.glob("snapshot-cam-1-*.jpg")
    assert stat.S_IMODE(snap.stat().st_mode) == 0o600
    original = cv2.cvtColor(cv2.imread(str(zidane_jpg)), cv2.COLOR_BGR2RGB)
    blurred = cv2.cvtColor(cv2.imread(str(snap)), cv2.COLOR_BGR2RGB)
    faces = FaceDetector(model_dir / "face_detection_full_range.tflite").detect(original)
    assert len(faces) >= 2
    h, w = original.shape[:2]
    for face in faces:
        y0, x0, y1, x1 = (
            int(face.box[0] * h),
            int(face.box[1] * w),
            int(face.box[2] * h),
            int(face.box[3] * w),
        )
        # Detail (the Laplacian's variance) inside each face all but vanishes.
        sharp = cv2.Laplacian(cv2.cvtColor(original[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
        soft = cv2.Laplacian(cv2.cvtColor(blurred[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
        assert soft < sharp / 10, (sharp, soft)
    # Expired snapshots are purged.
    assert purge_snapshots(out, ttl_s=3600) == 0
    assert purge_snapshots(out, ttl_s=3600, now=time.time() + 7200) == 1
    assert not snap.exists()
    assert np.asarray(blurred).shape == original.shape
