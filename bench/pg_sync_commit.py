#!/usr/bin/env python3
"""What synchronous replication costs the ingest: events/s and commit latency through the store.

One writer (one ingest worker) calls ``PostgresStore.add_events`` in batches, as the ingest does,
against a primary with a synchronous standby (tests/pgcluster.py, on free ports). Each set-up is a
session's ``synchronous_commit``, so all run on the same cluster, interleaved in short rounds (this
machine's load drifts): ``local`` (commits do not wait for the standby: asynchronous replication),
``on`` (they wait for its flush: the hub's choice) and ``remote_apply`` (for its replay). Only the
time inside ``add_events`` counts (building the events does not).

    .venv/bin/python bench/pg_sync_commit.py --seconds 24 --rounds 8 --batch 500 --batch 25
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

from hub.storage.postgres import PostgresStore
from tests.pgcluster import primary_and_standby
from tests.test_wire import event
from vigie import wire

MODES = ("local", "on", "remote_apply")
_seq = itertools.count()


def _batch(size: int, base: int) -> list[wire.ZoneCountEvent]:
    out = []
    for _ in range(size):
        i = next(_seq)
        ws = base + (i % 360) * 10
        out.append(
            event(id=wire.new_event_id(ws), window_start=ws, device=f"cam-{i % 200:03d}", zone=f"z{i % 2}",
                  k=3, counts={"person": 4}, mean_counts={"person": 2.5})
        )  # fmt: skip
    return out


def run(seconds: float, rounds: int, size: int) -> list[str]:
    base = (int(time.time()) // 3600 - 1) * 3600
    with primary_and_standby("on") as (primary, _):
        stores = {m: PostgresStore(f"{primary.url}?options=-csynchronous_commit%3D{m}") for m in MODES}
        for store in stores.values():
            store.add_events(_batch(size, base), time.time())  # warm: partition, plans
        latencies: dict[str, list[float]] = {m: [] for m in MODES}
        events = dict.fromkeys(MODES, 0)
        for _ in range(rounds):
            for mode, store in stores.items():
                spent = 0.0
                while spent < seconds / rounds / len(MODES):
                    batch = _batch(size, base)
                    t = time.perf_counter()
                    events[mode] += store.add_events(batch, time.time())
                    dt = time.perf_counter() - t
                    latencies[mode].append(dt)
                    spent += dt
        for store in stores.values():
            store.close()
    lines = []
    for mode in MODES:
        ms = sorted(x * 1000 for x in latencies[mode])
        busy = sum(latencies[mode])
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        lines.append(
            f"synchronous_commit={mode:<12} batch {size:>4}: {events[mode] / busy:7.0f} events/s, "
            f"commit median {statistics.median(ms):6.1f} ms, p99 {p99:6.1f} ms "
            f"({events[mode]} events in {len(ms)} commits, {busy:.1f} s)"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=24.0, help="Writing time per batch size, all set-ups.")
    ap.add_argument("--rounds", type=int, default=8, help="Interleaved rounds over the set-ups.")
    ap.add_argument("--batch", type=int, action="append", help="Events per commit (repeatable; 500, 25).")
    args = ap.parse_args()
    for size in args.batch or [500, 25]:
        for line in run(args.seconds, args.rounds, size):
            print(line, flush=True)


if __name__ == "__main__":
    main()
