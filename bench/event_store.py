"""Event storage: ingest rate of live-like and bulk batches, and bytes per stored event.

    python bench/event_store.py --backend sqlite --mode live --events 20000
    python bench/event_store.py --backend postgres --mode bulk --events 1000000 --batch 20000
    python bench/event_store.py --backend postgres --mode live --events 300000 --compact-every 120

``live``: 500-event batches, time-major, as the ingest workers write them (one event per stream
and batch; ``--compact-every``: with the compaction job run at the data's clock, timed apart).
``bulk``: device-major hours of the city in large batches, as a benchmark fill writes them.
Prints events/s of ``add_events`` and, after ``compact``, bytes per event (events with their
indexes). PostgreSQL: a schema of its own, dropped at the end.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.event_mix import city_hour, city_windows
from vigie import wire

START = 1_790_000_000 - 1_790_000_000 % 3600  # 2026-09-21, an hour boundary


def _events(mode: str, n: int, cameras: int) -> Iterator[wire.Event]:
    if mode == "live":
        return itertools.islice(city_windows(START, 10**9, cameras=cameras), n)
    hours = (city_hour(START + h * 3600, cameras=cameras) for h in itertools.count())
    return itertools.islice(itertools.chain.from_iterable(hours), n)


def _open(backend: str, tmp: Path) -> Any:
    if backend == "sqlite":
        from hub.storage import SQLiteStore

        return SQLiteStore(tmp / "hub.sqlite")
    from hub.storage.postgres import PostgresStore

    return PostgresStore("postgresql://postgres@127.0.0.1:5432/test", schema=f"b_{uuid.uuid4().hex[:10]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--mode", choices=("live", "bulk"), default="live")
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--cameras", type=int, default=1600, help="cameras of the city (1,600)")
    ap.add_argument(
        "--compact-every",
        type=int,
        default=0,
        help="live: run the compaction job (compact_recent) every this many seconds of data (0: never)",
    )
    ap.add_argument("--compact-grace", type=int, default=120, help="the job's compact_grace_s")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = _open(args.backend, Path(tmp))
        try:
            events = _events(args.mode, args.events, args.cameras)
            spent = 0.0
            total = 0
            jobs: list[tuple[float, int]] = []  # (seconds, events packed) of each compaction run
            last_job = START
            while batch := list(itertools.islice(events, args.batch)):  # made outside the timing
                clock = max(e.ts if isinstance(e, wire.Alert) else e.window_start for e in batch) + 12
                if args.compact_every and clock // args.compact_every != last_job // args.compact_every:
                    last_job = clock
                    t0 = time.perf_counter()
                    packed = store.compact_recent(float(clock), args.compact_grace)
                    jobs.append((time.perf_counter() - t0, packed))
                t0 = time.perf_counter()
                store.add_events(batch, float(START + total // 300 + 12))
                spent += time.perf_counter() - t0
                total += len(batch)
            print(f"{args.backend} {args.mode}: {total} events in batches of {args.batch}:"
                  f" {total / spent:,.0f} events/s ({spent:.1f} s in add_events)")  # fmt: skip
            if jobs:
                print(
                    f"compaction job: {len(jobs)} runs, {sum(p for _, p in jobs):,} events packed in"
                    f" {sum(t for t, _ in jobs):.1f} s (longest run {max(t for t, _ in jobs):.1f} s)"
                )
            if hasattr(store, "compact"):
                t0 = time.perf_counter()
                store.compact(time.time() + 10 * 365 * 86_400)
                print(f"compact: {time.perf_counter() - t0:.1f} s")
            if hasattr(store, "event_bytes"):
                size = store.event_bytes()
                print(f"bytes per event: {size / store.count_events():.1f} ({size:,} bytes,"
                      f" {store.count_events():,} events)")  # fmt: skip
        finally:
            if args.backend == "postgres":
                store.drop_schema()
            store.close()


if __name__ == "__main__":
    main()
