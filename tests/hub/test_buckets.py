"""Token buckets in the shared store (issue 22): the single process's semantics, for every process.

``hub/storage/buckets.py`` keeps each bucket as the time it is full again and decides a whole batch
in one statement; these tests hold it to the in-process bucket it replaced (the reference below is
that code), on both backends, and to one budget when several connections take at once.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from hub.live import EventWaker
from hub.ratelimit import RateLimiter
from hub.storage import SQLiteStore
from tests.conftest import PG_DSN

NOW = 1_800_000_000.0


class ReferenceBucket:
    """The per-process token bucket hub/ratelimit.py had before issue 22, verbatim in its arithmetic."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, now: float) -> bool:
        tokens, last = self.buckets.get(key, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1:
            self.buckets[key] = (tokens - 1, now)
            return True
        self.buckets[key] = (tokens, now)
        return False


@pytest.mark.parametrize(("rate", "burst"), [(2.0, 8), (100.0, 10_000), (0.25, 3), (20.0, 80)])
def test_a_batch_gets_what_one_process_gave_message_by_message(store: Any, rate: float, burst: int) -> None:
    """The defaults (100/s and 10,000 for devices, 20/s and 80 for API tokens) among them.

    Times move by multiples of 1/64 s, so the reference's floating-point sums are exact: the
    comparison is about the semantics, not about where two formulas round differently.
    """
    rng = random.Random(f"{rate}-{burst}")
    reference = ReferenceBucket(rate, burst)
    limiter = RateLimiter(store, "device", rate, burst)
    now = NOW
    for step in range(200):
        now += rng.choice([0, 1, 6, 24, 64, 192, rng.randrange(int(64 * 5 * burst / rate))]) / 64
        wanted = {f"dev-{d}": rng.choice([0, 1, 2, 5, burst // 2 + 1, burst + 3]) for d in range(3)}
        got = limiter.take(wanted, now)
        # The old code asked once per message, every message of a batch at the batch's time.
        expected = {key: sum(reference.allow(key, now) for _ in range(n)) for key, n in wanted.items()}
        assert got == expected, f"step {step}, t+{now - NOW:.2f} s, asked {wanted}"


def test_allow_says_how_long_to_wait(store: Any) -> None:
    limiter = RateLimiter(store, "api", 2.0, 3)
    assert [limiter.allow("tok", NOW)[0] for _ in range(4)] == [True, True, True, False]
    allowed, wait = limiter.allow("tok", NOW)
    assert not allowed
    assert 0 < wait <= 0.5
    assert limiter.allow("tok", NOW + 0.5)[0]  # one token back after 1/rate
    assert limiter.allow("other", NOW)[0]  # other keys are unaffected
    # API tokens and devices never share a bucket, even under the same name.
    assert RateLimiter(store, "device", 2.0, 3).allow("tok", NOW)[0]


def test_full_buckets_are_forgotten(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import hub.storage.buckets as buckets

    monkeypatch.setattr(buckets, "PURGE_EVERY", 4)
    store._bucket_writes = 0
    limiter = RateLimiter(store, "device", 10.0, 5)
    limiter.take({f"d{i}": 3 for i in range(50)}, NOW)
    assert store.count_buckets() == 50
    limiter.take({"d0": 1}, NOW + 0.1)
    limiter.take({"d1": 1}, NOW + 0.1)
    assert store.count_buckets() == 50  # not full again yet (3 tokens back in 0.3 s)
    limiter.take({"d2": 1}, NOW + 10)  # the 4th decision purges: every bucket is full by now
    assert store.count_buckets() == 1  # the one just written (full again at NOW + 10.1)
    assert limiter.take({"d0": 9}, NOW + 10) == {"d0": 5}  # forgotten = full


def _second_store(store: Any) -> Any:
    if store.backend == "sqlite":
        return SQLiteStore(store.path)
    from hub.storage.postgres import PostgresStore

    return PostgresStore(PG_DSN, schema=store.schema)


def test_two_connections_share_one_budget(store: Any) -> None:
    """Two writers (two processes' connections) racing for one key: the burst is given once."""
    other = _second_store(store)
    try:
        limiters = [RateLimiter(s, "api", 1e-6, 300) for s in (store, other)]  # no refill during the test
        got = [0, 0]
        go = threading.Barrier(2)

        def hammer(i: int) -> None:
            go.wait()
            for _ in range(250):
                got[i] += limiters[i].allow("shared-token", NOW)[0]

        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(got) == 300, got  # 500 asked, 300 in the bucket: not 2 × 250
        assert min(got) > 0, got  # both really took part
    finally:
        other.close()


def test_a_rate_limit_refuses_nonsense() -> None:
    store = SQLiteStore(":memory:")
    with pytest.raises(ValueError, match="rate must be > 0"):
        RateLimiter(store, "api", 0, 10)
    with pytest.raises(ValueError, match="burst"):
        store.take_tokens({"x": 1}, 1.0, 0, NOW)


# -- the live stream's waker ------------------------------------------------------------------------


@pytest.mark.postgres
def test_the_listener_wakes_on_a_commit_elsewhere_and_comes_back_after_losing_its_connection(
    pg_store: Any,
) -> None:
    import asyncio

    import psycopg

    from hub.storage.live import APP_NAME
    from tests.test_wire import event

    async def scenario() -> tuple[float, bool, float]:
        waker = EventWaker.for_store(pg_store)
        await waker.start()
        try:
            for _ in range(100):
                if waker.listening:
                    break
                await asyncio.sleep(0.05)
            assert waker.listening
            seen = waker.generation
            e = event(site="live", device="cam-1", k=3, counts={"person": 4}, mean_counts={"person": 2.5})
            started = time.monotonic()  # from the write's start: the insert, its commit, the NOTIFY
            await asyncio.to_thread(pg_store.add_events, [e], time.time())
            woke = await waker.wait(seen, 5.0)
            latency = time.monotonic() - started
            assert woke
            # Another schema's events (another hub on the same database) do not wake this one.
            from hub.storage.postgres import PostgresStore

            stranger = PostgresStore(PG_DSN, schema=f"t_{uuid.uuid4().hex[:12]}")
            try:
                seen = waker.generation
                stranger.add_events([e], time.time())
                quiet = not await waker.wait(seen, 0.5)
            finally:
                stranger.drop_schema()
                stranger.close()
            # The listener's connection killed (a restart, a failover): it listens again by itself.
            with psycopg.connect(PG_DSN, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s"
                    " AND query ILIKE 'LISTEN%%'",
                    (APP_NAME,),
                )
            lost = time.monotonic()
            for _ in range(100):
                if not waker.listening:
                    break
                await asyncio.sleep(0.05)
            for _ in range(200):
                if waker.listening:
                    break
                await asyncio.sleep(0.05)
            assert waker.listening, "the listener did not come back"
            return latency, quiet, time.monotonic() - lost
        finally:
            waker.stop()

    latency, quiet, back_s = asyncio.run(scenario())
    print(f"write start to wake-up: {latency * 1000:.1f} ms; listener back after {back_s:.1f} s")
    assert latency < 0.5, latency
    assert quiet, "an event stored in another schema woke this hub's streams"


def test_sqlite_streams_poll(tmp_path: Path) -> None:
    waker = EventWaker.for_store(SQLiteStore(tmp_path / "hub.sqlite"))
    assert not waker.listening

    import asyncio

    async def scenario() -> bool:
        await waker.start()
        return await waker.wait(waker.generation, 0.05)

    assert asyncio.run(scenario()) is False  # nothing wakes it: the stream polls
