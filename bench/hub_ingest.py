#!/usr/bin/env python3
"""Hub ingest against the broker's own delivery rate, on the same Mosquitto with the same publishers.

Publishers that outrun the hub (bench/fast_publisher.py: pre-encoded QoS 1 frames written to a
socket, not paho, whose Python cost per message capped earlier runs at ~13k msg/s) so that the
baseline is what Mosquitto can deliver, and the hub's ceiling shows.

1. Baseline: Mosquitto's C subscriber (`mosquitto_sub -q 1 -C N`) counting the messages. A paho
   subscriber that only counts is printed beside it, for the cost of a Python MQTT client alone.
2. The hub: `vigie hub ingest` (decode, validate, batch, idempotent insert,
   roll-ups, ack after commit) until every event is persisted and visible
   to a query — for SQLite, then for PostgreSQL.

Four fast publisher processes send N distinct, valid QoS 1 events as fast as the
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
from fast_publisher import start_publishers

from vigie import wire
from vigie.broker import start_broker
from vigie.netutil import free_port

PG = "postgresql://127.0.0.1:5432/test"


def c_baseline(port: int, total: int, publishers: int) -> float:
    """Mosquitto's own C subscriber counting ``total`` QoS 1 messages: the broker's delivery rate."""
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-C", str(total),
         "-i", "bench-c-baseline", "-t", wire.subscription(wire.Channel.EVENT)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)
    procs, go = start_publishers(port, total, publishers)
    t0 = time.perf_counter()
    go()
    sub.wait(600)
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    return total / elapsed


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
    procs, go = start_publishers(port, total, publishers)
    t0 = time.perf_counter()
    go()
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
    procs, go = start_publishers(port, total, publishers)
    t0 = time.perf_counter()
    go()
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
            base = c_baseline(broker.port, total, args.publishers)
            paho_rate = baseline(broker.port, total, args.publishers)
            workers = f"{args.ingest_workers} ingest worker(s)"
            pubs = f"{args.publishers} fast publishers"
            print(f"{total} QoS 1 events, {pubs}, {workers}, Mosquitto :{broker.port}")
            print(f"{'baseline mosquitto_sub (C, count only)':<38}: {base:8.0f} events/s")
            label = "paho subscriber (count only)"
            print(f"{label:<38}: {paho_rate:8.0f} events/s   ratio {paho_rate / base:.3f}")
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
