#!/usr/bin/env python3
"""Hub ingest against a plain subscriber, on the same Mosquitto with the same publishers.

1. Baseline: a paho subscriber (QoS 1) that only counts the messages.
2. The hub: `vigie hub ingest` (decode, validate, batch, idempotent insert,
   roll-ups, ack after commit) until every event is persisted and visible
   to a query — for SQLite, then for PostgreSQL.

Four publisher processes send N distinct, valid QoS 1 events as fast as the
broker takes them; each rate is N / (time from the publishers' start to the
last message counted, or persisted). Target: ratio ≥ 0.8 with either backend.

    .venv/bin/python bench/hub_ingest.py [--events 40000] [--publishers 4] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import paho.mqtt.client as mqtt

from vigie import wire
from vigie.broker import start_broker
from vigie.netutil import free_port

PG = "postgresql://127.0.0.1:5432/test"


def publisher(port: int, index: int, count: int, ready: mp.Barrier, go: mp.Event) -> None:  # type: ignore[type-arg]
    base = 1_790_000_000
    msgs = []
    for i in range(count):
        device = f"cam-{index}-{i % 50}"
        ts = base + 10 * (i // 50)
        e = wire.ZoneCountEvent(
            site="bench", device=device, zone="z0", id=wire.new_event_id(ts), window_start=ts, window_s=10,
            # k = 3, the hub's minimum (a smaller k is quarantined, never stored): counts 0 or >= 3.
            frames=50, counts={"person": 3 + i % 17, "car": 3 + i % 5}, mean_counts={}, k=3, model="m@1",
        )  # fmt: skip
        msgs.append((wire.topic("bench", device, wire.Channel.EVENT), wire.encode(e)))
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{index}-{uuid.uuid4().hex[:6]}"
    )
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", port)
    client.loop_start()
    ready.wait()
    go.wait()
    pending = []
    for topic, payload in msgs:
        pending.append(client.publish(topic, payload, qos=1))
        if len(pending) >= 1000:  # bounded: paho loses QoS 1 messages past 65,535 queued
            for info in pending:
                info.wait_for_publish(60)
            pending.clear()
    for info in pending:
        info.wait_for_publish(60)
    client.loop_stop()
    client.disconnect()


def run_publishers(port: int, total: int, n: int) -> tuple[list[mp.Process], mp.Event, mp.Barrier]:  # type: ignore[type-arg]
    ctx = mp.get_context("fork")
    ready, go = ctx.Barrier(n + 1), ctx.Event()
    procs = [ctx.Process(target=publisher, args=(port, i, total // n, ready, go)) for i in range(n)]
    for p in procs:
        p.start()
    return procs, go, ready


def baseline(port: int, total: int, publishers: int) -> float:
    got = 0
    done = mp.get_context("fork").Event()
    first_last: list[float] = []

    def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        nonlocal got
        got += 1
        if got == total:
            first_last.append(time.perf_counter())
            done.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-baseline", clean_session=True)
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.subscribe(wire.subscription(wire.Channel.EVENT), qos=1)
    sub.loop_start()
    time.sleep(1.0)
    procs, go, ready = run_publishers(port, total, publishers)
    ready.wait()
    t0 = time.perf_counter()
    go.set()
    done.wait(600)
    for p in procs:
        p.join()
    sub.loop_stop()
    sub.disconnect()
    return total / (first_last[0] - t0)


def hub(port: int, total: int, publishers: int, db: str, workers: int) -> float:
    from hub.storage import open_store

    log = open(os.devnull, "wb")  # noqa: SIM115 (held for the child's lifetime)
    ingest = subprocess.Popen(
        [sys.executable, "-m", "vigie", "--log-level", "WARNING", "hub", "ingest", "--db", db,
         "--broker", f"127.0.0.1:{port}", "--client-id", f"bench-{uuid.uuid4().hex[:6]}",
         "--workers", str(workers), "--group", f"bench-{uuid.uuid4().hex[:6]}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    store = open_store(db)
    time.sleep(2.0)
    procs, go, ready = run_publishers(port, total, publishers)
    ready.wait()
    t0 = time.perf_counter()
    go.set()
    deadline = time.monotonic() + 600
    while (stored := store.count_events()) < total:
        if time.monotonic() > deadline or ingest.poll() is not None:
            ingest.terminate()
            # Fail loudly rather than wait forever: a quarantined or refused event is never stored.
            sys.exit(f"hub ingest stored {stored} of {total} events (quarantined? see `vigie hub devices`)")
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    ingest.terminate()
    ingest.wait()
    store.close()
    return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument(
        "--ingest-workers", type=int, default=1, help="Hub ingest processes (shared subscription when > 1)."
    )
    args = parser.parse_args()
    total = args.events - args.events % args.publishers
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_broker(Path(tmp) / "broker", free_port())
        try:
            base = baseline(broker.port, total, args.publishers)
            workers = f"{args.ingest_workers} ingest worker(s)"
            print(f"{total} QoS 1 events, {args.publishers} publishers, {workers}, Mosquitto :{broker.port}")
            print(f"baseline paho subscriber (count only) : {base:8.0f} events/s")
            for backend in args.backends.split(","):
                if backend == "sqlite":
                    db = str(Path(tmp) / "hub.sqlite")
                else:
                    from hub.storage.postgres import PostgresStore

                    schema = f"bench_{uuid.uuid4().hex[:8]}"
                    pg = PostgresStore("host=127.0.0.1 dbname=test", schema=schema)
                    db = f"{PG}?options={quote(f'-c search_path={schema}')}"
                rate = hub(broker.port, total, args.publishers, db, args.ingest_workers)
                label = f"hub ingest, {backend:<8} (persisted)"
                print(f"{label:<38}: {rate:8.0f} events/s   ratio {rate / base:.3f}")
                if backend != "sqlite":
                    pg.drop_schema()
                    pg.close()
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
