#!/usr/bin/env python3
"""What synchronous replication costs the ingest: events/s and commit latency through the store.

One writer (one ingest worker) calls ``PostgresStore.add_events`` in batches, as the ingest does,
against a fresh PostgreSQL primary (tests/pgcluster.py, on free ports) in four set-ups: alone, with
an asynchronous standby, with a synchronous standby (``synchronous_commit = on``: the standby has
flushed the commit) and with ``remote_apply`` (the standby has replayed it: readable there).

    .venv/bin/python bench/pg_sync_commit.py --seconds 8 --batch 500 --batch 25
"""

from __future__ import annotations

import argparse
import statistics
import time

from hub.storage.postgres import PostgresStore
from tests.pgcluster import primary_and_standby
from tests.test_wire import event
from vigie import wire

MODES: dict[str, tuple[str | None, bool]] = {
    "primary alone": (None, False),
    "async standby": (None, True),
    "sync standby (on)": ("on", True),
    "sync standby (remote_apply)": ("remote_apply", True),
}


def _batches(n_batches: int, size: int) -> list[list[wire.ZoneCountEvent]]:
    base = (int(time.time()) // 3600 - 1) * 3600
    out = []
    for b in range(n_batches):
        out.append([
            event(id=wire.new_event_id(base + (i % 360) * 10), window_start=base + (i % 360) * 10,
                  device=f"cam-{i % 200:03d}", zone=f"z{i % 2}", k=3, counts={"person": 4},
                  mean_counts={"person": 2.5})
            for i in range(b * size, (b + 1) * size)
        ])  # fmt: skip
    return out


def run(mode: str, seconds: float, size: int) -> str:
    sync, standby = MODES[mode]
    with primary_and_standby(sync, standby=standby) as (primary, _):
        store = PostgresStore(primary.url)
        # Enough batches for the run, built before the clock starts (the ingest decodes them anyway).
        batches = _batches(max(20, int(seconds * 8_000 / size)), size)
        store.add_events(batches.pop(), time.time())  # warm: partition, plans
        latencies: list[float] = []
        events = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds and batches:
            batch = batches.pop()
            t = time.perf_counter()
            events += store.add_events(batch, time.time())
            latencies.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - t0
        store.close()
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (
        f"{mode:<29} batch {size:>4}: {events / elapsed:8.0f} events/s, {len(ms) / elapsed:6.1f} commits/s, "
        f"commit median {statistics.median(ms):6.1f} ms, p99 {p99:6.1f} ms ({events} events, {elapsed:.1f} s)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="Writing time per set-up and batch size.")
    ap.add_argument("--batch", type=int, action="append", help="Events per commit (repeatable; 500, 25).")
    ap.add_argument("--mode", action="append", choices=list(MODES), help="Only these set-ups.")
    args = ap.parse_args()
    for size in args.batch or [500, 25]:
        for mode in args.mode or list(MODES):
            print(run(mode, args.seconds, size), flush=True)


if __name__ == "__main__":
    main()
