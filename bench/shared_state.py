#!/usr/bin/env python3
"""What stateless hub processes cost (issue 22): rate limits in the store, streams woken by NOTIFY.

1. The ingest's per-device decision for one batch of 500 messages: the in-process bucket it
   replaced (500 calls, no I/O) against the store's one statement, for 1, 50 and 500 devices.
2. The API's per-request decision (one key): one statement.
3. ``add_events`` of one 500-event batch on PostgreSQL with and without the NOTIFY after it.
4. Commit to wake-up: a LISTENing waker against the 1 s poll it replaced (its expected delay).

    .venv/bin/python bench/shared_state.py [--rounds 200] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from hub.live import EventWaker
from hub.ratelimit import RateLimiter
from hub.storage import SQLiteStore
from vigie import wire

PG_DSN = "host=127.0.0.1 port=5432 dbname=test"


class InProcessBucket:
    """The per-process bucket of hub/ratelimit.py before issue 22."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str, now: float) -> bool:
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return True
            self._buckets[key] = (tokens, now)
            return False


def _ms(samples: list[float]) -> str:
    samples = sorted(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return f"median {statistics.median(samples) * 1000:7.3f} ms, p99 {p99 * 1000:7.3f} ms"


def _timed(fn: Any, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _batch(devices: int, n: int = 500) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i in range(n):
        key = f"vigie/v1/load/cam-{i % devices}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _events(n: int, device: str = "cam-0") -> list[wire.Event]:
    ts = int(time.time()) // 10 * 10
    return [
        wire.ZoneCountEvent(
            site="bench",
            device=f"{device}-{i % 50}",
            zone="quai",
            id=wire.new_event_id(ts),
            window_start=ts,
            window_s=10,
            frames=50,
            counts={"person": 4},
            mean_counts={"person": 2.5},
            model="bench@1",
            k=3,
        )
        for i in range(n)
    ]


def rate_limits(store: Any, rounds: int) -> None:
    limiter = RateLimiter(store, "device", 100.0, 10_000)
    for devices in (1, 50, 500):
        batch = _batch(devices)
        old = InProcessBucket(100.0, 10_000)
        now = time.time()
        before = _timed(
            lambda b=batch, o=old, t=now: [o.allow(k, t) for k, n in b.items() for _ in range(n)], rounds
        )
        after = _timed(lambda b=batch: limiter.take(b), rounds)
        print(f"  batch of 500 from {devices:3d} devices: in-process {_ms(before)} | store {_ms(after)}")
    api = RateLimiter(store, "api", 20.0, 80)
    print(f"  one API request (one key):            store {_ms(_timed(lambda: api.allow('token'), rounds))}")


def notify_cost(rounds: int) -> None:
    from hub.storage.events import EventSql
    from hub.storage.postgres import PostgresStore

    store = PostgresStore(PG_DSN, schema=f"bench_{uuid.uuid4().hex[:8]}")
    try:
        batches = [_events(500) for _ in range(2 * rounds)]
        with_notify = _timed(lambda: store.add_events(batches.pop(), time.time()), rounds)
        without = _timed(lambda: EventSql.add_events(store, batches.pop(), time.time()), rounds)
        print(f"  add_events(500) with NOTIFY:    {_ms(with_notify)}")
        print(f"  add_events(500) without NOTIFY: {_ms(without)}")
        latency(store, rounds=min(rounds, 50))
    finally:
        store.drop_schema()
        store.close()


def latency(store: Any, rounds: int) -> None:
    async def run() -> list[float]:
        waker = EventWaker.for_store(store)
        await waker.start()
        while not waker.listening:
            await asyncio.sleep(0.01)
        out = []
        for _ in range(rounds):
            seen = waker.generation
            batch = _events(1, "lat")
            await asyncio.to_thread(store.add_events, batch, time.time())
            done = time.perf_counter()  # committed and notified: what the ingest's write returns after
            await waker.wait(seen, 5.0)
            out.append(time.perf_counter() - done)
        waker.stop()
        return out

    print(f"  write returned to stream woken (LISTEN/NOTIFY): {_ms(asyncio.run(run()))}")
    print("  the 1 s poll it replaced: 500 ms on average, up to 1000 ms (uniform over the period)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    for backend in args.backends.split(","):
        print(f"{backend}:")
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                store: Any = SQLiteStore(Path(tmp) / "hub.sqlite")
                rate_limits(store, args.rounds)
                store.close()
        else:
            from hub.storage.postgres import PostgresStore

            store = PostgresStore(PG_DSN, schema=f"bench_{uuid.uuid4().hex[:8]}")
            try:
                rate_limits(store, args.rounds)
            finally:
                store.drop_schema()
                store.close()
            notify_cost(args.rounds)


if __name__ == "__main__":
    main()
