"""The hub ingest benchmark's C publishers (bench/c_publisher.py): what ``mosquitto_pub -l`` carries
must be, byte for byte, the valid events encoded (a newline splits a line, a NUL truncates it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bench.c_publisher import BAD_BYTES, MosquittoPublishers, line_events, write_inputs
from tests.conftest import need_service
from vigie import wire
from vigie.broker import LocalBroker


def test_events_are_valid_distinct_and_hold_no_newline_or_nul() -> None:
    topic, payloads = line_events(3, 3000)
    assert wire.parse_topic(topic).device == "c3"
    events = [wire.decode(p, wire.Channel.EVENT) for p in payloads]
    assert all(isinstance(e, wire.ZoneCountEvent) and e.device == "c3" and e.k == 3 for e in events)
    assert len({e.id for e in events}) == len({e.window_start for e in events}) == 3000  # type: ignore[union-attr]
    assert not [p for p in payloads if any(b in p for b in BAD_BYTES)]
    # Without the choice of values, the wire format would pack these bytes: the check is not idle.
    assert b"\n" in wire.encode(events[0].model_copy(update={"window_s": 10}))


def test_mosquitto_pub_delivers_every_event_intact(broker: LocalBroker, tmp_path: Path) -> None:
    need_service(shutil.which("mosquitto_pub") is not None, "mosquitto_pub (mosquitto-clients)")
    inputs = write_inputs(tmp_path / "in", 2000, 2)
    filt = wire.subscription(wire.Channel.EVENT)
    common = ["mosquitto_sub", "-p", str(broker.port), "-q", "1", "-c", "-i", "t-count", "-t", filt]
    subprocess.run([*common, "-E"], check=True, timeout=30)
    # One hex line per message: its payload as received, whatever bytes it holds.
    sub = subprocess.Popen([*common, "-C", "2000", "-F", "%x"], stdout=subprocess.PIPE)
    pubs = MosquittoPublishers(broker.port, inputs)
    pubs.go()
    pubs.join(60)
    out, _ = sub.communicate(timeout=60)
    got = sorted(bytes.fromhex(line) for line in out.decode().split())
    sent = sorted(p for _, path in inputs for p in path.read_bytes().split(b"\n") if p)
    assert len(sent) == 2000
    assert got == sent
