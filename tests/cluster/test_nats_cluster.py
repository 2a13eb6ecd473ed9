"""A three-node NATS JetStream cluster carrying the fleet's MQTT: one node killed mid-stream, nothing lost.

Real processes throughout: three ``nats-server`` nodes on loopback (JetStream,
MQTT), two ``vigie hub ingest`` processes sharing the stream's durable
consumer, three devices made of the agent's real outbox and MQTT link (each
homed on a different node, the others as failover), and three ``vigie sim``
fleets, one homed on each node with the other two as failover. The node killed
(SIGKILL) is the stream's leader, so the kill also forces a leader election.
The verdict is the chaos suite's accounting: per device, what the outbox
produced is in the store, once (0 lost, 0 duplicated), and the outbox is empty;
per sim fleet, every event it produced is stored exactly once (one row per
device, zone and window), and none is left unreceipted.

NATS 2.9's MQTT PUBACK is not an acknowledgement from the stream: a QoS 1
publish acknowledged while the stream has no leader is not stored (before the
sim kept its events until the hub's receipt, a sim window of 20 events was
lost in 3 of 8 runs). Agents and sim devices alike keep each event until the
hub's receipt names it and send it again (same id, dropped by the store as a
duplicate) when none comes in time; the sim devices on the killed node move to
a surviving one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.link import MqttLink
from edge.outbox import Outbox
from hub.jetstream_config import JetStreamSettings
from tests.chaos.harness import stored_events
from tests.chaos.harness import stored_ids as stored_id_list
from tests.conftest import need_service
from vigie import wire
from vigie.mqtt import BrokerConfig
from vigie.nats_cluster import NatsCluster, find_nats_server, start_nats_cluster
from vigie.sim import FleetResult, SimOptions, run_fleet

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]

SITE = "cluster"
AGENTS = ("cam-1", "cam-2", "cam-3")
RATE = 20.0  # events per second per agent device
PRODUCE_S = 14.0  # how long the agent devices produce
KILL_AT_S = 5.0  # after this long the stream's leader is killed
SIM_S = 22.0  # sim fleets: two 10 s windows closed, two zones, per device
SIM_DEVICES, SIM_ZONES = 10, 2
SIM_RESEND_S, SIM_DRAIN_S = 3.0, 60.0  # as the agents' resend_after_s; the drain only waits if needed


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    need_service(find_nats_server() is not None, "nats-server (apt-get install nats-server)")
    c = start_nats_cluster(tmp_path / "nats")
    yield c
    c.stop()


def _stream_leader(urls: list[str], stream: str, timeout: float = 30.0) -> str:
    """The server name leading the stream, once the ingest workers have created it."""
    import nats

    async def ask() -> str:
        nc = await nats.connect(urls)
        try:
            deadline = time.monotonic() + timeout
            while True:
                with contextlib.suppress(Exception):
                    info = await nc.jetstream().stream_info(stream)
                    if info.cluster is not None and info.cluster.leader:
                        return str(info.cluster.leader)
                if time.monotonic() > deadline:
                    raise AssertionError(f"stream {stream} has no leader after {timeout} s")
                await asyncio.sleep(0.2)
        finally:
            await nc.close()

    return asyncio.run(ask())


def _wait_consumed(urls: list[str], settings: JetStreamSettings, timeout: float = 60.0) -> dict[str, int]:
    """Until the shared consumer has nothing pending nor unacknowledged; what it said last."""
    import nats

    async def ask() -> dict[str, int]:
        nc = await nats.connect(urls)
        try:
            deadline = time.monotonic() + timeout
            state: dict[str, int] = {}
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    info = await nc.jetstream().consumer_info(settings.stream, settings.durable)
                    state = {"pending": info.num_pending or 0, "ack_pending": info.num_ack_pending or 0,
                             "redelivered": info.num_redelivered or 0}  # fmt: skip
                    if state["pending"] == 0 and state["ack_pending"] == 0:
                        break
                await asyncio.sleep(0.3)
            return state
        finally:
            await nc.close()

    return asyncio.run(ask())


def _ingest(tmp_path: Path, db: Path, urls: list[str], index: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "VIGIE_HUB_BROKER_BACKEND": "nats",
        "VIGIE_HUB_JETSTREAM__SERVERS": json.dumps(urls),
        "VIGIE_HUB_CAMPAIGNS": "false",  # OTA campaigns would look for an MQTT broker
    }
    log = (tmp_path / f"ingest-{index}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "vigie", "hub", "ingest", "--db", str(db), "--client-id", f"ingest-{index}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def _produce(box: Outbox, link: MqttLink, device: str, stop: threading.Event) -> None:
    """RATE events a second, each (zone, window) once, committed to the outbox as an agent does."""
    base = wire.coarsen(time.time(), 10) - 10
    n = 0
    while not stop.is_set():
        start = base - 10 * (n // 10)
        e = wire.ZoneCountEvent(
            site=SITE, device=device, zone=f"z{n % 10}", id=wire.new_event_id(start), window_start=start,
            window_s=10, frames=50, counts={"person": 3 + n % 7}, mean_counts={}, k=3, model="m@1",
        )  # fmt: skip
        box.put(wire.topic(SITE, device, wire.Channel.EVENT), wire.encode(e), 1, e.id)
        link.notify()
        n += 1
        stop.wait(1 / RATE)


def test_a_broker_node_killed_mid_stream_loses_and_duplicates_nothing(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    urls = cluster.config.urls
    nodes = cluster.config.nodes
    db = tmp_path / "hub.sqlite"
    workers = [_ingest(tmp_path, db, urls, i) for i in range(2)]
    boxes: dict[str, Outbox] = {}
    links: dict[str, MqttLink] = {}
    threads: list[threading.Thread] = []
    fleets: dict[str, FleetResult] = {}
    stop = threading.Event()
    try:
        leader = _stream_leader(urls, JetStreamSettings().stream)
        order = sorted(nodes, key=lambda n: n.server_name != leader)  # the leader first
        # Each agent device is homed on a different node (cam-1 on the leader), the rest as failover.
        for i, device in enumerate(AGENTS):
            home = order[i]
            others = tuple(f"{n.host}:{n.mqtt_port}" for n in order if n != home)
            broker = BrokerConfig(host=home.host, port=home.mqtt_port, failover=others, keepalive=5)
            boxes[device] = Outbox(tmp_path / f"{device}.outbox")
            links[device] = MqttLink(broker, boxes[device], site=SITE, device=device, resend_after_s=3.0)
            links[device].start()
            threads.append(
                threading.Thread(target=_produce, args=(boxes[device], links[device], device, stop))
            )
        # A `vigie sim` fleet homed on each node, the other two as failover (the first on the leader).
        for node in order:
            failover = tuple((n.host, n.mqtt_port) for n in order if n != node)
            opts = SimOptions(
                devices=SIM_DEVICES, duration_s=SIM_S, host=node.host, port=node.mqtt_port, failover=failover,
                site=f"sim-{node.server_name}", zones=SIM_ZONES, window_s=10, heartbeat_s=5.0,
                resend_after_s=SIM_RESEND_S, drain_s=SIM_DRAIN_S,
            )  # fmt: skip
            threads.append(threading.Thread(target=lambda o=opts: fleets.__setitem__(o.site, run_fleet(o))))
        for t in threads:
            t.start()
        time.sleep(KILL_AT_S)
        dead = (order[0].host, order[0].mqtt_port)
        on_dead = [d for d, link in links.items() if link.connected and link.address == dead]
        cluster.kill(leader)
        killed_at = time.monotonic()
        time.sleep(PRODUCE_S - KILL_AT_S)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        # Every outbox empties: each of its events was receipted by the hub after its commit.
        deadline = time.monotonic() + 90
        while any(b.depth() for b in boxes.values()) and time.monotonic() < deadline:
            time.sleep(0.5)
        drained_s = round(time.monotonic() - killed_at, 1)
        consumer = _wait_consumed(urls, JetStreamSettings())
        survivors = {(n.host, n.mqtt_port) for n in nodes if n.server_name != leader}
        addresses = {d: (link.address, link.published, link.resent) for d, link in links.items()}
        for link in links.values():
            link.stop()
    finally:
        stop.set()
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=30)
    logs = "\n".join((tmp_path / f"ingest-{i}.log").read_text()[-2000:] for i in range(2))
    with contextlib.closing(sqlite3.connect(db)) as store:
        ledger = {}
        for device, box in boxes.items():
            stored = stored_events(db, site=SITE, device=device)
            ids = len({e["id"] for e in stored})
            windows = len({(e.get("zone") or e.get("line"), e["window_start"]) for e in stored})
            ledger[device] = {
                "produced": box.produced(), "dropped": box.dropped(), "pending": box.depth(), "stored": ids,
                "duplicate_ids": len(stored) - ids, "duplicate_windows": ids - windows,
            }  # fmt: skip
            box.close()
        sim_stored = {}
        for site in fleets:
            ids_list = stored_id_list(db, site=site)  # a duplicated row shows twice
            sim_windows = {(e["device"], e["zone"], e["window_start"]) for e in stored_events(db, site=site)}
            sim_stored[site] = (set(ids_list), len(ids_list), len(sim_windows))
        per_worker = {
            w: json.loads(s)["received"] for w, s in store.execute("SELECT worker, stats FROM ingest_workers")
        }
    where = (
        f"\nledger {ledger}\nkilled {leader}, drained {drained_s} s after\nlinks {addresses}"
        f"\nworkers {per_worker}\nconsumer {consumer}\n{logs}"
    )
    for device, c in ledger.items():
        assert c["produced"] > RATE * KILL_AT_S, f"{device} produced too little{where}"
        assert c["dropped"] == 0, f"{device}{where}"
        assert c["pending"] == 0, f"{device} left events undelivered{where}"
        assert c["stored"] == c["produced"], f"{device} lost {c['produced'] - c['stored']}{where}"
        assert c["duplicate_ids"] == 0, f"{device}{where}"
        assert c["duplicate_windows"] == 0, f"{device}{where}"
    # The agent homed on the killed node (cam-1) was on it, and now talks to a surviving one.
    assert on_dead == ["cam-1"], where
    assert addresses["cam-1"][0] in survivors, f"cam-1 still on {addresses['cam-1']}{where}"
    assert len(fleets) == 3, f"a sim fleet did not finish{where}"
    for site, result in fleets.items():
        stored_ids, stored_rows, stored_windows = sim_stored[site]
        counts = (f"{site}: produced {result.events_produced}, acknowledged by NATS {result.events_acked}, "
                  f"sent again {result.events_resent}, receipted {result.events_receipted}, "
                  f"unreceipted {result.unreceipted}, stored {len(stored_ids)}, "
                  f"reconnects {result.reconnects}, moved {result.moved}")  # fmt: skip
        print(counts)
        # Two windows closed in SIM_S, per device and zone, all connected.
        assert result.connected == SIM_DEVICES, f"{counts}{where}"
        assert result.events_produced >= SIM_DEVICES * SIM_ZONES * 2, f"{counts}{where}"
        assert result.unreceipted == 0, f"{counts}{where}"
        assert result.events_receipted == result.events_produced, f"{counts}{where}"
        lost = result.event_ids - stored_ids
        assert not lost, f"{site}: {len(lost)} events lost\n{counts}{where}"
        assert stored_ids == result.event_ids, f"{site}: stored ids it never produced{where}"
        assert stored_rows == len(stored_ids), f"{site}: duplicated rows{where}"
        assert stored_windows == len(stored_ids), f"{site}: a (device, zone, window) stored twice{where}"
    # A resend the store already had is a duplicate (as is a redelivery); one it had not was lost by
    # NATS after its PUBACK.
    resent = sum(r.events_resent for r in fleets.values()) + sum(a[2] for a in addresses.values())
    full_logs = [(tmp_path / f"ingest-{i}.log").read_text() for i in range(2)]
    stopped = re.compile(r"ingest stopped .*duplicates=(\d+)")
    duplicates = sum(int(n) for log in full_logs for n in stopped.findall(log))
    print(f"sent again (sims and agents) {resent}; duplicates in the store {duplicates}")
    # The fleet homed on the killed node moved, every device of it, to the surviving nodes.
    homed_on_dead = fleets[f"sim-{leader}"]
    moved = f"sim-{leader}: moved {homed_on_dead.moved}, reconnects {homed_on_dead.reconnects}{where}"
    assert homed_on_dead.moved == SIM_DEVICES, moved
    assert homed_on_dead.reconnects >= SIM_DEVICES, moved
    # Both workers took part (the consumer is shared, not one worker's).
    assert len(per_worker) == 2, where
    assert all(n > 0 for n in per_worker.values()), where
