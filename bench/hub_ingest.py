#!/usr/bin/env python3
"""Hub ingest against the broker's own delivery rate, with publishers in C that outrun the hub.

Publishers: Mosquitto's own ``mosquitto_pub -l -q 1``, one process per device, each fed a file of
pre-encoded events (bench/c_publisher.py); ``--publisher python`` uses the pre-encoded Python
ones instead (bench/fast_publisher.py, 50 devices per process). Every measurement gets a fresh
Mosquitto, so no session left by an earlier one (the hub's are persistent) takes a share.

1. Baseline: Mosquitto's C subscriber (``mosquitto_sub -q 1 -C N``) counting the messages, run
   first and last (the machine's load drifts). Its persistent session and subscription are made
   (``-E``, which waits for the SUBACK) before the publishers start, so none is missed.
2. The hub: ``vigie hub ingest`` with 1 and 2 workers, on SQLite and on PostgreSQL, until every
   event is persisted (counted through the store). It must have subscribed first: heartbeats
   from probe devices go out until every worker reports having received one.

Each rate is N / (publishers' start → last message counted, or persisted); ratio = hub / baseline,
target ≥ 0.8. The publishers must outrun the hub, else the ratio says nothing of the hub: the
baseline must be at least ``--outrun`` × the best hub rate, and the exit status is 1 when it is
not. Every wait has a deadline: a run finishes or fails with a message, never hangs.

    .venv/bin/python bench/hub_ingest.py [--events 100000] [--publishers 4] [--publisher c|python]
        [--backends sqlite,postgres] [--ingest-workers 1,2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, Protocol
from urllib.parse import quote

import paho.mqtt.client as mqtt
from c_publisher import MosquittoPublishers, write_inputs
from fast_publisher import start_publishers

from vigie import wire
from vigie.broker import LocalBroker, start_broker
from vigie.netutil import free_port

PG = "postgresql://127.0.0.1:5432/test"
TARGET = 0.8


class Publishers(Protocol):
    def go(self) -> None: ...
    def done(self) -> bool: ...
    def join(self, timeout: float) -> None: ...
    def kill(self) -> None: ...


class PythonPublishers:
    """bench/fast_publisher.py behind the same face as :class:`MosquittoPublishers`."""

    def __init__(self, port: int, total: int, n: int) -> None:
        self._procs, self._go = start_publishers(port, total, n)  # forked and encoded here, before t0

    def go(self) -> None:
        self._go()

    def done(self) -> bool:
        return not any(p.is_alive() for p in self._procs)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for p in self._procs:
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                self.kill()
                raise SystemExit(f"Python publisher {p.pid} still running after {timeout:.0f} s: killed")
            if p.exitcode != 0:
                raise SystemExit(f"Python publisher {p.pid} exited with {p.exitcode}")

    def kill(self) -> None:
        for p in self._procs:
            if p.is_alive():
                p.kill()
                p.join()


@contextmanager
def fresh_broker(tmp: Path, total: int) -> Iterator[LocalBroker]:
    # Queue room for every event: a hub that falls N behind must not lose any (Mosquitto drops beyond it).
    broker = start_broker(
        tmp / f"broker-{uuid.uuid4().hex[:6]}", free_port(), max_queued_messages=total + 10_000
    )
    try:
        yield broker
    finally:
        broker.stop()


def c_baseline(port: int, total: int, publishers: Publishers, timeout: float) -> float:
    """Mosquitto's own C subscriber counting ``total`` QoS 1 messages: the broker's delivery rate."""
    common = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-c", "-i", "bench-c-baseline",
              "-t", wire.subscription(wire.Channel.EVENT)]  # fmt: skip
    # The session and its subscription exist (SUBACK received) before any publisher starts.
    subprocess.run([*common, "-E"], check=True, timeout=30, stdout=subprocess.DEVNULL)
    sub = subprocess.Popen([*common, "-C", str(total)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.perf_counter()
    publishers.go()
    try:
        sub.wait(timeout)
    except subprocess.TimeoutExpired:
        sub.kill()
        publishers.kill()
        raise SystemExit(
            f"baseline: mosquitto_sub had not counted {total} messages after {timeout:.0f} s"
        ) from None
    elapsed = time.perf_counter() - t0
    publishers.join(timeout)
    if sub.returncode != 0:
        err = sub.stderr.read().decode(errors="replace").strip() if sub.stderr else ""
        raise SystemExit(f"baseline: mosquitto_sub exited with {sub.returncode}: {err or 'no message'}")
    return total / elapsed


def _probe_beat(device: str) -> bytes:
    now = wire.coarsen(time.time(), wire.HEARTBEAT_GRANULARITY_S)
    return wire.encode(
        wire.Heartbeat(
            site="bench", device=device, ts=now, agent_version="bench", model="m@1", uptime_s=1, fps=1.0,
            inference_p50_ms=1.0, inference_p95_ms=1.0, cpu_percent=1.0, rss_mb=1.0, disk_free_mb=1.0,
            outbox_depth=0, outbox_dropped=0,
        )
    )  # fmt: skip


def wait_subscribed(port: int, store: Any, workers: int, alive: Callable[[], bool], timeout: float) -> float:
    """Send probe heartbeats until each of the ``workers`` reports having received one; seconds taken.

    A worker reports its counters on connecting and every 5 s after, so this takes a few seconds;
    then the subscription is proven end to end (with 2 workers, the shared one reaches both).
    """
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-probe-{uuid.uuid4().hex[:6]}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    t0 = time.monotonic()
    rows: list[dict[str, Any]] = []
    try:
        for n in range(10**9):
            rows = store.list_ingest_status()
            if len(rows) >= workers and all(r["connected"] and r.get("heartbeats", 0) > 0 for r in rows):
                return time.monotonic() - t0
            if not alive():
                raise SystemExit("hub ingest exited before subscribing (its log is printed above)")
            if time.monotonic() - t0 > timeout:
                seen = {r["worker"]: (r["connected"], r.get("heartbeats", 0)) for r in rows}
                raise SystemExit(
                    f"hub ingest not subscribed after {timeout:.0f} s: workers (connected, probes) {seen}, "
                    f"expected {workers} with a probe each"
                )
            device = f"probe{n % 8}"
            client.publish(wire.topic("bench", device, wire.Channel.HEARTBEAT), _probe_beat(device), qos=1)
            time.sleep(0.2)
        raise AssertionError("unreachable")
    finally:
        client.loop_stop()
        client.disconnect()


def hub(
    port: int, total: int, publishers: Publishers, db: str, workers: int, log_path: Path, timeout: float
) -> tuple[float, float]:
    """The hub's rate (N / publishers' start → last persisted) and the publishers' own, in that run."""
    from hub.storage import open_store

    # One device per C publisher sends N/P events at full speed: the per-device limit (100/s,
    # bursts of 10,000) would refuse most of them. It is raised, not removed: the limiter still runs.
    # A huge burst, not just a high rate: a worker whose ``now`` lags the bucket's ``full_at`` (set
    # by the other worker) by more than burst/rate seconds gets nothing, and two workers waiting on
    # SQLite's write lock lag by a fraction of a second (1,917 events refused in one trial run).
    env = {**os.environ, "VIGIE_HUB_DEVICE_RATE": "1e6", "VIGIE_HUB_DEVICE_BURST": str(10**9)}
    tag = uuid.uuid4().hex[:6]
    with log_path.open("wb") as log:
        ingest = subprocess.Popen(
            [sys.executable, "-m", "vigie", "--log-level", "WARNING", "hub", "ingest", "--db", db,
             "--broker", f"127.0.0.1:{port}", "--client-id", f"bench-{tag}", "--workers", str(workers),
             "--group", f"bench-{tag}"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    store = open_store(db)
    try:  # whatever happens (a failure, ^C), the hub and the publishers are stopped
        return _measure(port, total, publishers, store, ingest, workers, log_path, timeout)
    finally:
        publishers.kill()
        _stop(ingest)
        store.close()  # before the schema is dropped: an open transaction would block the DROP


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # the parent of several workers passes it on to them
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _measure(
    port: int,
    total: int,
    publishers: Publishers,
    store: Any,
    ingest: subprocess.Popen[bytes],
    workers: int,
    log_path: Path,
    timeout: float,
) -> tuple[float, float]:
    def fail(message: str) -> NoReturn:
        publishers.kill()
        _stop(ingest)
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        print("\n".join(["--- hub ingest log (tail) ---", *tail, "---"]), file=sys.stderr)
        raise SystemExit(message)

    try:
        ready_s = wait_subscribed(port, store, workers, lambda: ingest.poll() is None, 90)
    except SystemExit as exc:
        fail(str(exc))
    stored = store.count_events()
    if stored:
        fail(f"the store already holds {stored} events before the run: use a fresh database")
    t0 = time.perf_counter()
    publishers.go()
    deadline = time.monotonic() + timeout
    published_s = None
    progress = (0, time.monotonic())  # (stored, when it last grew): a stalled run fails in 30 s
    while (stored := store.count_events()) < total:
        if published_s is None and publishers.done():
            published_s = time.perf_counter() - t0
        if stored > progress[0]:
            progress = (stored, time.monotonic())
        stalled = published_s is not None and time.monotonic() - progress[1] > 30
        if time.monotonic() > deadline or ingest.poll() is not None or stalled:
            keys = ("received", "stored", "quarantined", "rate_limited")
            states = {r["worker"]: {k: r.get(k) for k in keys} for r in store.list_ingest_status()}
            why = (
                "exited" if ingest.poll() is not None
                else "stored nothing more for 30 s" if stalled else f"still short after {timeout:.0f} s"
            )  # fmt: skip
            fail(f"hub ingest {why}: stored {stored} of {total} events; workers {states}")
        time.sleep(0.02)
    elapsed = time.perf_counter() - t0
    publishers.join(timeout)
    if published_s is None:
        published_s = time.perf_counter() - t0
    _stop(ingest)
    if quarantined := store.quarantine_count():
        raise SystemExit(
            f"hub ingest quarantined {quarantined} messages: the benchmark's events must all be valid"
        )
    print(f"    ({workers} worker(s): subscribed in {ready_s:.1f} s, publishers done in {published_s:.2f} s)")
    return total / elapsed, total / published_s


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--publishers", type=int, default=4, help="Publisher processes (C: one device each).")
    parser.add_argument("--publisher", choices=("c", "python"), default="c")
    parser.add_argument("--max-inflight", type=int, default=1000, help="mosquitto_pub -M (C publishers).")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--ingest-workers", default="1,2", help="Worker counts to run, comma-separated.")
    parser.add_argument("--timeout", type=float, default=300, help="Seconds any one run may take.")
    parser.add_argument(
        "--outrun",
        type=float,
        default=1.25,
        help="The baseline must be this × the best hub rate (else exit 1).",
    )
    args = parser.parse_args()
    total = args.events - args.events % args.publishers
    worker_counts = [int(w) for w in args.ingest_workers.split(",")]
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.publisher == "c":
            inputs = write_inputs(tmp / "inputs", total, args.publishers)

            def publishers(port: int) -> Publishers:
                return MosquittoPublishers(port, inputs, max_inflight=args.max_inflight)

            how = f"mosquitto_pub -l -q 1 -M {args.max_inflight}, one device each"
            kind = f"{args.publishers} C publishers ({how})"
        else:

            def publishers(port: int) -> Publishers:
                return PythonPublishers(port, total, args.publishers)

            kind = f"{args.publishers} Python fast publishers (50 devices each)"
        print(f"{total} QoS 1 events, {kind}, a fresh Mosquitto per run")

        def baseline() -> float:
            with fresh_broker(tmp, total) as broker:
                return c_baseline(broker.port, total, publishers(broker.port), args.timeout)

        first = baseline()
        print(f"baseline mosquitto_sub (C), first: {first:8.0f} events/s", flush=True)
        rows: list[tuple[str, int, float, float]] = []
        for backend in args.backends.split(","):
            for workers in worker_counts:
                pg: Any = None
                if backend == "sqlite":
                    db = str(tmp / f"hub-{workers}-{uuid.uuid4().hex[:6]}.sqlite")
                else:
                    from hub.storage.postgres import PostgresStore

                    schema = f"bench_ingest_{uuid.uuid4().hex[:8]}"
                    pg = PostgresStore("host=127.0.0.1 dbname=test", schema=schema)
                    db = f"{PG}?options={quote(f'-c search_path={schema}')}"
                try:
                    with fresh_broker(tmp, total) as broker:
                        log = tmp / f"ingest-{backend}-{workers}.log"
                        rate, pub_rate = hub(
                            broker.port, total, publishers(broker.port), db, workers, log, args.timeout
                        )
                finally:
                    if pg is not None:
                        pg.drop_schema()
                        pg.close()
                rows.append((backend, workers, rate, pub_rate))
                print(
                    f"hub ingest, {backend:<8} {workers} worker(s): {rate:8.0f} events/s persisted",
                    flush=True,
                )
        last = baseline()
    base = (first + last) / 2
    load1 = os.getloadavg()
    print(f"\nbaseline mosquitto_sub (C): first {first:.0f}, last {last:.0f}, mean {base:.0f} events/s")
    print(f"load average at start {load0[0]:.2f}, at end {load1[0]:.2f} (1 min)\n")
    print(
        "| backend | ingest workers | hub (persisted) | publishers, same run | ratio hub/baseline | ≥ 0.8 |"
    )
    print("|---|---|---|---|---|---|")
    for backend, workers, rate, pub_rate in rows:
        verdict = "met" if rate / base >= TARGET else "**not met**"
        cells = [
            backend,
            str(workers),
            f"{rate:,.0f} ev/s",
            f"{pub_rate:,.0f} ev/s",
            f"{rate / base:.3f}",
            verdict,
        ]
        print("| " + " | ".join(cells) + " |")
    best = max((r[2] for r in rows), default=0.0)
    if best and base < args.outrun * best:
        print(
            f"\nNOT PROVEN: the baseline ({base:,.0f}/s) is under {args.outrun} × the best hub rate "
            f"({best:,.0f}/s): the publishers or the broker may bound the hub here, not the hub itself."
        )
        sys.exit(1)
    if best:
        print(f"\nThe publishers outrun the hub: baseline {base / best:.2f} × the best hub rate.")


if __name__ == "__main__":
    main()
