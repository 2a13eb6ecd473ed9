"""The privacy invariant, checked on the actual bytes the agent publishes.

A raw MQTT subscriber on the broker captures every payload the agent sends
while it analyses real photos (a bus scene, and two people with visible
faces) and real CCTV footage. Nothing in those bytes may carry pixels, box
coordinates, timing finer than the window, a MAC address or a track id.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import paho.mqtt.client as mqtt
import pytest

from tests.conftest import need_service
from tests.test_e2e import run_agent
from vigie import wire
from vigie.broker import LocalBroker, find_mosquitto, start_broker
from vigie.netutil import free_port

pytestmark = pytest.mark.e2e

SITE = """
site: test
anonymisation: {{window_s: 10, k: 3}}
cameras:
  - device: cam-1
    profile: generic-x86
    source: {video}
    fps_cap: 1000  # replay as fast as the detector goes
    zones:
      - {{name: left, polygon: [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]}}
      - {{name: right, polygon: [[0.5, 0], [1, 0], [1, 1], [0.5, 1]], area_m2: 100}}
    lines:
      - {{name: middle, a: [0.5, 0], b: [0.5, 1]}}
    rules:
      - {{type: crowd_density, zone: right, threshold: 0.03, min_duration_s: 1}}
"""
EVENT_KEYS = set(wire.ZoneCountEvent.model_fields)
LINE_KEYS = set(wire.LineCountEvent.model_fields)
ALERT_KEYS = set(wire.Alert.model_fields)
HEARTBEAT_KEYS = set(wire.Heartbeat.model_fields)
STATUS_KEYS = set(wire.Status.model_fields)
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"RIFF", b"GIF8", b"BM")
MAC = re.compile(rb"(?i)\b[0-9a-f]{2}([:-])(?:[0-9a-f]{2}\1){4}[0-9a-f]{2}\b")
FORBIDDEN_WORDS = {
    "box",
    "bbox",
    "boxes",
    "track",
    "face",
    "plate",
    "mac",
    "pixel",
    "pixels",
    "image",
    "jpeg",
    "embedding",
    "x1",
    "y1",
    "xmin",
    "ymin",
    "coords",
    "polygon",
}


def capture(port: int) -> tuple[mqtt.Client, list[tuple[str, bytes]]]:
    seen: list[tuple[str, bytes]] = []
    lock = threading.Lock()
    ready = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="privacy-tap")

    def on_message(c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/" + wire.Channel.RECEIPT.value):
            return  # hub -> device: the hub's receipts are not what the devices publish
        with lock:
            seen.append((msg.topic, bytes(msg.payload)))

    client.on_message = on_message
    client.on_subscribe = lambda *a: ready.set()
    client.connect("127.0.0.1", port)
    client.subscribe("#", qos=1)
    client.loop_start()
    assert ready.wait(5)
    return client, seen


def walk(value: Any) -> list[Any]:
    """Every leaf and key in a decoded msgpack value."""
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in (k, *walk(v))]
    if isinstance(value, list):
        return [x for v in value for x in walk(v)]
    return [value]


@contextlib.contextmanager
def receipting_ingest(db: Path, broker_port: int) -> Iterator[None]:
    """The hub's ingest, receipting what agents publish: an agent exits once its outbox is confirmed."""
    ingest = subprocess.Popen(
        [sys.executable, "-m", "vigie", "hub", "ingest", "--db", str(db),
         "--broker", f"127.0.0.1:{broker_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        ingest.terminate()
        ingest.wait(timeout=30)


@pytest.fixture(scope="module")
def published(
    model_dir: Path,
    bus_jpg: Path,
    zidane_jpg: Path,
    vtest_avi: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[tuple[str, bytes]]]:
    tmp_path = tmp_path_factory.mktemp("privacy")
    need_service(find_mosquitto() is not None, "mosquitto")
    broker = start_broker(tmp_path / "broker", free_port())
    try:
        with receipting_ingest(tmp_path / "hub.sqlite", broker.port):
            yield _publish_all(broker, model_dir, (bus_jpg, zidane_jpg), vtest_avi, tmp_path)
    finally:
        broker.stop()


def _publish_all(
    broker: LocalBroker, model_dir: Path, photo_files: tuple[Path, ...], vtest_avi: Path, tmp_path: Path
) -> list[tuple[str, bytes]]:
    client, seen = capture(broker.port)
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in photo_files:
        (photos / p.name).symlink_to(p)
    # The video agent also counts a line, suppresses counts under 3 and watches a rule.
    site_file = tmp_path / "site.yaml"
    site_file.write_text(SITE.format(video=vtest_avi))
    for i, source in enumerate((photos, vtest_avi)):
        extra = ["--zone", "left=0,0;0.5,0;0.5,1;0,1", "--zone", "right=0.5,0;1,0;1,1;0.5,1"]
        if i == 1:
            extra = ["--config", str(site_file)]
        proc = run_agent(model_dir, source, broker.port, tmp_path / f"o{i}.sqlite", f"cam-{i}", *extra)
        assert proc.returncode == 0, proc.stderr
    time.sleep(0.5)
    client.loop_stop()
    client.disconnect()
    return seen


def test_published_bytes_carry_no_pixels_boxes_timing_or_identity(published: list[tuple[str, bytes]]) -> None:
    events = [(t, p) for t, p in published if t.endswith("/event")]
    assert len(events) >= 4  # two zones, two agents: the tap really saw the traffic
    ids: dict[str, bytes] = {}
    for topic, payload in published:
        # 1. Small: nothing the size of even a thumbnail.
        assert len(payload) < 1024, (topic, len(payload))
        # 2. No image signatures, no MAC addresses anywhere in the raw bytes.
        assert not any(m in payload for m in IMAGE_MAGIC), topic
        assert not MAC.search(payload), topic
        body = msgpack.unpackb(payload, raw=False)
        leaves = walk(body)
        # 3. No binary blobs, no lists (a list is how boxes and embeddings travel).
        assert not any(isinstance(x, bytes | bytearray) for x in leaves), topic
        assert not any(isinstance(v, list) for v in body.values()), topic
        keys = {k for k in leaves if isinstance(k, str) and k in body}
        assert not any(set(k.lower().split("_")) & FORBIDDEN_WORDS for k in keys), keys
        kind = body["kind"]
        # 4. Exactly the whitelisted fields of its kind.
        expected = {
            "zone_count": EVENT_KEYS, "line_count": LINE_KEYS, "alert": ALERT_KEYS,
            "heartbeat": HEARTBEAT_KEYS, "status": STATUS_KEYS,
        }[kind]  # fmt: skip
        assert set(body) == expected, (kind, set(body) ^ expected)
        if kind in ("zone_count", "line_count"):
            # 5. Counts are whole numbers of objects per class, at least k, or "<k": no coordinates.
            maps = [body["counts"]] if kind == "zone_count" else [body["forward"], body["backward"]]
            k = body["k"]
            for value in (v for m in maps for v in m.values()):
                assert value == f"<{k}" or (isinstance(value, int) and value >= k), (value, k)
        if kind == "zone_count":
            assert all(round(v, 2) == v for v in body["mean_counts"].values())
            # 6. Time is coarsened to the window, including inside the id.
            assert body["window_start"] % body["window_s"] == 0
            assert uuid.UUID(body["id"]).int >> 80 == body["window_start"] * 1000
            # 7. No identity that persists: every event has a new id. The same id twice is only
            #    allowed as the same bytes: that event sent again because no receipt came in time.
            assert ids.setdefault(body["id"], payload) == payload, "an id reused by another event"
            assert body["zone"] in {"left", "right"}
        elif kind == "alert":
            assert body["ts"] % wire.ALERT_GRANULARITY_S == 0
            assert uuid.UUID(body["id"]).int >> 80 == body["ts"] * 1000
        elif kind == "heartbeat":
            assert body["ts"] % wire.HEARTBEAT_GRANULARITY_S == 0
        # 8. And it is a valid v1 message.
        wire.decode(payload)


def test_video_agent_published_lines_suppression_and_alerts(published: list[tuple[str, bytes]]) -> None:
    bodies = [msgpack.unpackb(p) for t, p in published if "/cam-1/event" in t]
    kinds = {b["kind"] for b in bodies}
    assert kinds == {"zone_count", "line_count", "alert"}
    assert all(b["k"] == 3 for b in bodies if b["kind"] in ("zone_count", "line_count"))
    lines = [b for b in bodies if b["kind"] == "line_count"]
    crossings = sum(
        v for b in lines for m in (b["forward"], b["backward"]) for v in m.values() if isinstance(v, int)
    )
    assert crossings >= 3


def test_faces_become_counts(published: list[tuple[str, bytes]]) -> None:
    # zidane.jpg: two people with visible faces; what leaves is "person: n" per zone, nothing else.
    # The photo agent runs with the default k (3): a zone holding 1 or 2 of them says "<3".
    photo_events = [msgpack.unpackb(p) for t, p in published if "/cam-0/event" in t]
    people = [e["counts"]["person"] for e in photo_events if "person" in e["counts"]]
    assert all(e["k"] == 3 for e in photo_events)
    assert "<3" in people
    assert all(v == "<3" or v >= 3 for v in people)
