#!/usr/bin/env python3
"""Hub ingest through a three-node NATS JetStream cluster, against a counting consumer and against Mosquitto.

The same fast publishers as bench/hub_ingest.py (pre-encoded QoS 1 MQTT frames,
bench/fast_publisher.py), spread over the cluster's nodes' MQTT ports, send N
distinct valid events into the replicated stream (R3, work queue: the hub's
settings). Each rate is N / (time from the publishers' start to the last
message counted, or persisted):

1. Counting consumer: one process pulling from a durable consumer on the same
   stream and acknowledging each message, storing nothing: what the cluster
   delivers to a Python consumer.
2. The hub: ``vigie hub ingest`` processes with the ``nats`` backend sharing the
   durable consumer (decode, validate, batch, idempotent insert, roll-ups, ack
   after commit, receipts back) until every event is in the store.
3. With ``--paho-windows 20,100``: one paho client (as the agent's link) publishing into the
   stream with each in-flight window (``max_inflight_messages_set``), every PUBACK awaited.
4. With ``--mosquitto``: the single-Mosquitto path of bench/hub_ingest.py (same
   publishers, one broker, the hub's MQTT subscriber) for the same N and store.

    .venv/bin/python bench/cluster_ingest.py [--events 20000] [--publishers 3] [--workers 2]
        [--backend sqlite|postgres] [--paho-windows 20,100] [--mosquitto]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fast_publisher import bench_events, publish_frames

from hub.jetstream_config import JetStreamSettings
from hub.jetstream_source import ensure_stream
from vigie.nats_cluster import NatsCluster, start_nats_cluster

PG = "postgresql://127.0.0.1:5432/test"


def _run(port: int, index: int, count: int, ready: Any, go: Any) -> None:
    messages = bench_events(index, count)
    ready.wait()
    go.wait()
    publish_frames(port, messages)


def start_publishers(ports: list[int], total: int, n: int) -> tuple[list[Any], Any]:
    """``n`` publishers, publisher i on ``ports[i % len(ports)]``; they encode, then wait for ``go()``."""
    ctx = mp.get_context("fork")
    ready, go = ctx.Barrier(n + 1), ctx.Event()
    procs = [
        ctx.Process(target=_run, args=(ports[i % len(ports)], i, total // n, ready, go)) for i in range(n)
    ]
    for p in procs:
        p.start()
    ready.wait()
    return procs, go.set


async def _reset_stream(urls: list[str], settings: JetStreamSettings) -> None:
    """A fresh, empty stream and consumer for each phase."""
    import nats

    nc = await nats.connect(urls)
    js = nc.jetstream()
    with contextlib.suppress(Exception):  # absent: nothing to delete
        await js.delete_stream(settings.stream)
    await ensure_stream(js, settings)
    await nc.close()


def counting(
    cluster: NatsCluster, total: int, publishers: int, settings: JetStreamSettings
) -> tuple[float, float]:
    """A durable pull consumer that only counts and acks: the cluster's delivery rate to Python.

    Also the publishers' own rate (every PUBACK received): what the nodes' MQTT took in.
    """
    import nats

    urls = cluster.config.urls
    asyncio.run(_reset_stream(urls, settings))
    ports = [n.mqtt_port for n in cluster.config.nodes]
    procs, go = start_publishers(ports, total, publishers)

    async def consume(t0: float) -> float:
        nc = await nats.connect(urls)
        sub = await nc.jetstream().pull_subscribe_bind(settings.durable, settings.stream)
        got = 0
        deadline = time.monotonic() + 120
        while got < total:
            if time.monotonic() > deadline:
                sys.exit(
                    f"the counting consumer got {got} of {total} messages in 120 s (lost by the cluster?)"
                )
            try:
                msgs = await sub.fetch(500, timeout=1.0)
            except Exception:  # noqa: S112 (timeout: nothing yet)
                continue
            for m in msgs:
                await m.ack()
            got += len(msgs)
        elapsed = time.perf_counter() - t0
        await nc.close()
        return elapsed

    t0 = time.perf_counter()
    go()
    published: list[float] = []

    def join() -> None:
        for p in procs:
            p.join()
        published.append(time.perf_counter() - t0)

    joiner = threading.Thread(target=join)
    joiner.start()
    elapsed = asyncio.run(consume(t0))
    joiner.join()
    return total / elapsed, total / published[0]


def hub(
    cluster: NatsCluster, total: int, publishers: int, db: str, workers: int, settings: JetStreamSettings
) -> float:
    """``workers`` ``vigie hub ingest`` processes on the nats backend until every event is stored."""
    from hub.storage import open_store

    urls = cluster.config.urls
    asyncio.run(_reset_stream(urls, settings))
    env = {
        **os.environ, "VIGIE_HUB_BROKER_BACKEND": "nats", "VIGIE_HUB_JETSTREAM__SERVERS": json.dumps(urls),
        "VIGIE_HUB_CAMPAIGNS": "false",
    }  # fmt: skip
    log = open(os.devnull, "wb")  # noqa: SIM115 (held for the children's lifetime)
    ingest = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vigie",
                "--log-level",
                "WARNING",
                "hub",
                "ingest",
                "--db",
                db,
                "--client-id",
                f"bench-{i}",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for i in range(workers)
    ]
    store = open_store(db)
    time.sleep(3.0)  # imports and connection
    ports = [n.mqtt_port for n in cluster.config.nodes]
    procs, go = start_publishers(ports, total, publishers)
    t0 = time.perf_counter()
    go()
    deadline = time.monotonic() + 180
    while (stored := store.count_events()) < total:
        if time.monotonic() > deadline or any(p.poll() is not None for p in ingest):
            for p in ingest:
                p.terminate()
            sys.exit(f"hub ingest stored {stored} of {total} events")
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    for p in ingest:
        p.terminate()
    for p in ingest:
        p.wait()
    store.close()
    return total / elapsed


def paho_window(cluster: NatsCluster, window: int, count: int, settings: JetStreamSettings) -> float:
    """One paho client's QoS 1 rate into the stream with ``window`` messages in flight."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    asyncio.run(_reset_stream(cluster.config.urls, settings))
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-paho-{window}")
    client.max_inflight_messages_set(window)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", cluster.config.nodes[0].mqtt_port)
    client.loop_start()
    messages = bench_events(1000 + window, count)
    t0 = time.perf_counter()
    infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(timeout=300)
    elapsed = time.perf_counter() - t0
    client.loop_stop()
    client.disconnect()
    return count / elapsed


def _db(tmp: Path, backend: str, tag: str) -> tuple[str, Any]:
    if backend == "sqlite":
        return str(tmp / f"hub-{tag}.sqlite"), None
    from hub.storage.postgres import PostgresStore

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    pg = PostgresStore("host=127.0.0.1 dbname=test", schema=schema)
    return f"{PG}?options={quote(f'-c search_path={schema}')}", pg


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--publishers", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="Hub ingest processes sharing the consumer.")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--mosquitto", action="store_true", help="Also the single-Mosquitto path.")
    parser.add_argument("--paho-windows", default="", help="In-flight windows to try, e.g. 20,100.")
    args = parser.parse_args()
    total = args.events - args.events % args.publishers
    settings = JetStreamSettings()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        cluster = start_nats_cluster(tmp / "nats")
        try:
            base, taken = counting(cluster, total, args.publishers, settings)
            db, pg = _db(tmp, args.backend, "nats")
            rate = hub(cluster, total, args.publishers, db, args.workers, settings)
            if pg is not None:
                pg.drop_schema()
                pg.close()
            windows = {int(w): 0.0 for w in args.paho_windows.split(",") if w}
            for w in windows:
                windows[w] = paho_window(cluster, w, min(2000, 10 * w), settings)
        finally:
            cluster.stop()
        print(
            f"{total} QoS 1 events, {args.publishers} fast publishers over 3 NATS nodes (R3 work queue)",
        )
        print(f"{'publishers (every PUBACK back)':<46}: {taken:8.0f} events/s")
        print(f"{'counting consumer (ack only)':<46}: {base:8.0f} events/s")
        label = f"hub ingest, {args.workers} worker(s), {args.backend} (persisted)"
        print(f"{label:<46}: {rate:8.0f} events/s   ratio {rate / base:.3f}")
        for w, r in windows.items():
            print(f"{f'one paho client, {w} in flight':<46}: {r:8.0f} events/s")
        if args.mosquitto:
            from hub_ingest import hub as mosquitto_hub

            from vigie.broker import start_broker
            from vigie.netutil import free_port

            broker = start_broker(tmp / "mosquitto", free_port())
            try:
                db, pg = _db(tmp, args.backend, "mosquitto")
                # One worker: the single-box path (several need MQTT 5 shared subscriptions).
                single = mosquitto_hub(broker.port, total, args.publishers, db, 1)
                if pg is not None:
                    pg.drop_schema()
                    pg.close()
            finally:
                broker.stop()
            label = f"single Mosquitto, 1 worker, {args.backend} (persisted)"
            print(f"{label:<46}: {single:8.0f} events/s   cluster/single {rate / single:.3f}")


if __name__ == "__main__":
    main()
