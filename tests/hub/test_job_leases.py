"""Issue 22: periodic jobs run once a period across every hub process, under a lease in the store.

Before, each uvicorn worker ran its own retention purge (N workers purged N times a period) and,
scaled out (`vigie hub serve --workers N`, `vigie hub ingest`), no process ran the fusion job.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.jobs import LeasedJob
from hub.storage import JobClaim, Retention
from tests.conftest import PG_DSN, cli
from tests.hub.test_ingest_scale import store_url
from tests.test_wire import event
from vigie import wire
from vigie.broker import LocalBroker
from vigie.netutil import free_port, wait_for_port

LEASE, EVERY = 30.0, 60.0


def _other(store: Any) -> Any:
    """A second store instance (its own connection) on the same database, as another process has."""
    if store.backend == "sqlite":
        from hub.storage import SQLiteStore

        return SQLiteStore(store.path)
    from hub.storage.postgres import PostgresStore

    return PostgresStore(PG_DSN, schema=store.schema)


@pytest.fixture
def two(store: Any) -> Iterator[tuple[Any, Any]]:
    other = _other(store)
    try:
        yield store, other
    finally:
        other.close()


# -- the store's lease ------------------------------------------------------------------------------


def test_one_holder_and_the_job_starts_once_a_period(two: tuple[Any, Any]) -> None:
    a, b = two
    t = 1_000_000.0
    first = a.claim_job("purge", "A", t, LEASE, EVERY)
    assert first == JobClaim(due=True, ran_at=t, expires_at=t + LEASE, runs=1)  # a new job runs at once
    assert b.claim_job("purge", "B", t + 1, LEASE, EVERY) is None  # A holds it
    renewed = a.claim_job("purge", "A", t + 10, LEASE, EVERY)
    assert renewed == JobClaim(due=False, ran_at=t, expires_at=t + 10 + LEASE, runs=1)  # renewed, not due
    assert b.claim_job("purge", "B", t + 10 + LEASE - 0.001, LEASE, EVERY) is None  # not yet expired
    assert a.claim_job("purge", "A", t + EVERY, LEASE, EVERY) == JobClaim(
        True, t + EVERY, t + EVERY + LEASE, 2
    )
    # Another job has a lease of its own.
    assert b.claim_job("fusion", "B", t + EVERY, LEASE, 5.0) == JobClaim(
        True, t + EVERY, t + EVERY + LEASE, 1
    )
    jobs = {j["name"]: j for j in b.list_jobs()}
    assert (jobs["purge"]["holder"], jobs["purge"]["runs"], jobs["fusion"]["holder"]) == ("A", 2, "B")


def test_an_expired_lease_goes_to_another_who_runs_the_job_when_due_not_at_once(two: tuple[Any, Any]) -> None:
    a, b = two
    t = 2_000_000.0
    assert a.claim_job("purge", "A", t, LEASE, EVERY) is not None
    # A dies: no renewal. At its expiry B takes the lease, but the period started by A is not over.
    took = b.claim_job("purge", "B", t + LEASE, LEASE, EVERY)
    assert took == JobClaim(due=False, ran_at=t, expires_at=t + 2 * LEASE, runs=1)
    assert a.claim_job("purge", "A", t + LEASE + 1, LEASE, EVERY) is None  # A is back: B holds it now
    assert b.claim_job("purge", "B", t + EVERY, LEASE, EVERY) == JobClaim(
        True, t + EVERY, t + EVERY + LEASE, 2
    )


def test_a_released_lease_is_free_at_once(two: tuple[Any, Any]) -> None:
    a, b = two
    t = 3_000_000.0
    a.claim_job("purge", "A", t, LEASE, EVERY)
    b.release_job("purge", "B")  # not the holder: no effect
    assert b.claim_job("purge", "B", t + 1, LEASE, EVERY) is None
    a.release_job("purge", "A")
    assert b.claim_job("purge", "B", t + 1, LEASE, EVERY) == JobClaim(False, t, t + 1 + LEASE, 1)


@pytest.mark.postgres
def test_two_processes_racing_for_leases_on_postgres_get_one_holder_each_time(pg_store: Any) -> None:
    """Two connections (two processes' stores) claim 40 fresh leases at the same instant: one wins each."""
    other = _other(pg_store)
    stores = [pg_store, other]
    rounds = 40
    barrier = threading.Barrier(2)
    got: list[list[JobClaim | None]] = [[], []]

    def claim(i: int) -> None:
        for r in range(rounds):
            barrier.wait()
            got[i].append(stores[i].claim_job(f"job-{r}", f"P{i}", 5_000_000.0, LEASE, EVERY))

    try:
        threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
        holders = {j["name"]: j["holder"] for j in pg_store.list_jobs()}
    finally:
        other.close()
    for r in range(rounds):
        won = [i for i in range(2) if got[i][r] is not None]
        assert len(won) == 1, (r, got[0][r], got[1][r])
        assert got[won[0]][r] == JobClaim(True, 5_000_000.0, 5_000_000.0 + LEASE, 1)
        assert holders[f"job-{r}"] == f"P{won[0]}"
    wins = [sum(c is not None for c in got[i]) for i in range(2)]
    print(f"{rounds} races: wins per process {wins}")


# -- the job runner -----------------------------------------------------------------------------------


def test_leased_jobs_in_two_processes_run_once_a_period_and_hand_over_when_one_stops(
    two: tuple[Any, Any],
) -> None:
    a, b = two
    started: list[tuple[str, float]] = []
    lock = threading.Lock()

    def runner(who: str, store: Any) -> Any:
        def run() -> None:
            # The start the store recorded for this run (the claim's time, not this thread's).
            ran_at = next(j["ran_at"] for j in store.list_jobs() if j["name"] == "tick")
            with lock:
                started.append((who, ran_at))

        return run

    every, lease = 0.4, 1.5  # the holder renews every 0.4 s (its period), the other tries every 0.5 s
    ja = LeasedJob(a, "tick", runner("A", a), every, lease_s=lease, holder="A")
    jb = LeasedJob(b, "tick", runner("B", b), every, lease_s=lease, holder="B")
    ja.start()
    deadline = time.monotonic() + 10
    while not started and time.monotonic() < deadline:  # A takes the lease first
        time.sleep(0.01)
    jb.start()
    t0 = time.time()
    time.sleep(2.0)
    ja.stop()  # gives the lease up: B takes it at its next try and runs when due
    stopped = time.time()
    time.sleep(1.5)
    jb.stop()
    t1 = time.time()
    whos = [w for w, _ in started]
    times = [s for _, s in started]
    gaps = [round(y - x, 3) for x, y in itertools.pairwise(times)]
    print(f"runs {whos}, gaps {gaps}")
    assert whos[0] == "A", whos
    assert "B" in whos, whos
    assert all(w == "A" for w, s in started if s < stopped), started
    assert all(w == "B" for w, s in started if s > stopped), started
    assert min(gaps) >= every, gaps  # never two starts within a period, whoever made them
    assert len(started) <= (t1 - t0) / every + 2, (len(started), t1 - t0)
    assert max(gaps) <= every + lease / 3 + 0.5, gaps  # the hand-over took one try, not a lease
    assert a.list_jobs()[0]["runs"] == len(started)


def test_single_process_purge_runs_at_start_then_waits_for_its_period(tmp_path: Path) -> None:
    """One hub as before: a purge at start; a restart within the period does not purge again."""
    from hub.retention import PurgeJob
    from hub.storage import SQLiteStore

    s = SQLiteStore(tmp_path / "h.sqlite")
    try:
        for _ in range(2):  # start, stop, start again
            job = PurgeJob(s, Retention(), every_s=3600, lease_s=30)
            job.start()
            deadline = time.monotonic() + 10
            while not s.list_purges() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            job.stop()
        assert len(s.list_purges()) == 1
        assert s.list_jobs()[0]["expires_at"] == 0  # released at stop
    finally:
        s.close()


# -- real processes: `vigie hub serve --workers 2` on PostgreSQL ----------------------------------------

PERIOD = 1.5


@pytest.mark.e2e
@pytest.mark.postgres
def test_two_uvicorn_workers_purge_once_a_period_and_the_ingest_workers_run_the_fusion_job(
    pg_store: Any, broker: LocalBroker, tmp_path: Path
) -> None:
    """`vigie hub serve --workers 2 --ingest-workers 2`: the purge once a period (not once per
    worker), and the fusion job once a period in one of the ingest processes (before: in none)."""
    from hub.fusion.cameras import save_locations
    from hub.storage import CubeQuery

    # An hour of camera roll-ups from a placed camera: the fusion job folds them into the cube.
    now = int(time.time())
    hour = now - now % 3600
    windows = [event(zone=f"z{i}", id=wire.new_event_id(hour), window_start=hour) for i in range(3)]
    pg_store.add_events(windows, time.time())
    save_locations(pg_store, {"vieux-port/cam-01": (43.2951, 5.3745)})
    port = free_port()
    env = {**os.environ, "VIGIE_HUB_PURGE_EVERY_S": str(PERIOD), "VIGIE_HUB_FUSION_EVERY_S": str(PERIOD),
           "VIGIE_HUB_K": "3"}  # fmt: skip
    env.pop("VIGIE_HUB_STATE_DIR", None)
    log = tmp_path / "hub.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cli("hub", "serve", "--db", store_url(pg_store), "--port", str(port), "--workers", "2",
                "--ingest-workers", "2", "--broker", f"127.0.0.1:{broker.port}"),
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        assert wait_for_port(port, timeout=30), log.read_text()[-3000:]
        deadline = time.monotonic() + 30
        camera: list[dict[str, Any]] = []
        while not camera:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, ("the fusion job never ran", log.read_text()[-3000:])
            time.sleep(0.3)
            camera = pg_store.query_cube(CubeQuery(sources=("camera",), limit=10)).rows
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).raise_for_status()
        # Both uvicorn workers and both ingest processes are up by now: watch 5 periods.
        before = {j["name"]: j for j in pg_store.list_jobs()}
        t0 = time.time()
        time.sleep(5 * PERIOD)
        t1 = time.time()
        after = {j["name"]: j for j in pg_store.list_jobs()}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    purges = [p["ran_at"] for p in pg_store.list_purges(1000) if t0 <= p["ran_at"] < t1]
    fusion_runs = after["fusion"]["runs"] - before["fusion"]["runs"]
    most = (t1 - t0) / PERIOD + 1
    holders = after["retention-purge"]["holder"], after["fusion"]["holder"]
    print(f"{t1 - t0:.1f} s: {len(purges)} purges, {fusion_runs} fusion passes (at most {most:.1f} each); "
          f"held by {holders}")  # fmt: skip
    # Two workers each purging on their own made about twice as many (10 in 7.5 s here).
    assert 3 <= len(purges) <= most, purges
    assert 3 <= fusion_runs <= most, (before, after)
    # Each purge row came from one start in the lease (a start just before t0 may have its row after).
    assert abs(after["retention-purge"]["runs"] - before["retention-purge"]["runs"] - len(purges)) <= 1
    assert {r["source"] for r in camera} == {"camera"}
