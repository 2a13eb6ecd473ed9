"""PostgreSQL for many readers: a streaming standby serves the analysts' reads, a promote loses no
acknowledged event, and a commit the standby never confirmed is not acknowledged (issue 22).

Each test starts its own primary and standby on free ports (tests/pgcluster.py).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from typing import Any

import msgpack
import psycopg
import pytest
from fastapi.testclient import TestClient

from hub.api.main import create_app
from hub.config import HubSettings
from hub.ingest import Ingestor
from hub.mqtt_receiver import Delivery
from hub.storage.postgres import PostgresStore, StoreUnavailableError
from hub.storage.readonly import ReadOnlyPostgresStore
from hub.storage.replication import durability_warning, primary_durability
from tests.conftest import PG_DSN, cli, need_service, postgres_available
from tests.pgcluster import PgNode, pg_binaries_available, primary_and_standby
from tests.test_wire import event
from vigie import wire
from vigie.exceptions import ConfigError, VigieError
from vigie.mqtt import BrokerConfig
from vigie.netutil import free_port

HOUR = 3600
BASE = (int(time.time()) // HOUR - 2) * HOUR  # two hours ago: this month's partition


def _events(n: int, device: str = "cam-01", start: int = 0) -> list[wire.ZoneCountEvent]:
    """``n`` events with k = 3 (the hub's minimum), one window each, 10 s apart."""
    out = []
    for i in range(start, start + n):
        ws = BASE + (i % 360) * 10
        out.append(
            event(id=wire.new_event_id(ws), window_start=ws, device=device, k=3, counts={"person": 4},
                  mean_counts={"person": 2.5})
        )  # fmt: skip
    return out


@pytest.fixture
def cluster_ok() -> None:
    need_service(pg_binaries_available(), "PostgreSQL 15 binaries (/usr/lib/postgresql/15/bin)")


@pytest.mark.cluster
@pytest.mark.timeout(120)  # a hang (a commit waiting for a stopped standby) fails, and stops its clusters
@pytest.mark.usefixtures("cluster_ok")
def test_standby_serves_rollups_while_the_primary_takes_writes() -> None:
    # remote_apply: a commit returns once the standby has replayed it, so what was acknowledged is
    # readable on the standby at once (no polling below: a lagging read would fail the test).
    with primary_and_standby("remote_apply") as (primary, standby):
        assert standby is not None
        read = f"{standby.url}?application_name=vigie-read"
        settings = HubSettings(db=primary.url, read_db=read, ingest=False, auth=False, k=3, campaigns=False)
        with TestClient(create_app(settings)) as client:
            store: Any = client.app.state.store  # type: ignore[attr-defined]
            seen = 0
            for round_ in range(5):
                assert store.add_events(_events(40, start=round_ * 40), time.time()) == 40
                seen += 40
                body = client.get("/v1/rollups", params={"metric": "windows", "limit": 10_000}).json()
                assert sum(r["n"] for r in body["data"]) == seen, body
                events = client.get("/v1/events", params={"limit": 1000}).json()
                assert events["count"] == seen
            devices = client.get("/v1/devices").json()["data"]
            assert [(d["device"], d["events"]) for d in devices] == [("cam-01", seen)]
            # The reads were the standby's: its connection is there, in recovery, and refuses writes.
            reader = standby.query(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'vigie-read'"
            )
            assert reader == [(1,)]
            assert primary.query(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'vigie-read'"
            ) == [(0,)]
            read_store: Any = client.app.state.read_store  # type: ignore[attr-defined]
            assert read_store is not store
            assert read_store._query("SELECT pg_is_in_recovery()") == [(True,)]
            with pytest.raises(Exception, match="read-only"):
                read_store.add_events(_events(1, start=999), time.time())
            # The standby gone (this read DSN names no other node): 503 with Retry-After, not a 500.
            # First the primary stops waiting for it, or every commit (the audit log's too) would wait.
            primary.query("ALTER SYSTEM SET synchronous_standby_names = ''")
            primary.query("SELECT pg_reload_conf()")
            standby.stop("immediate")
            down = client.get("/v1/rollups")
            assert down.status_code == 503, down.text
            assert down.headers["retry-after"] == "5"
            assert "database is unavailable" in down.json()["detail"]
            assert "127.0.0.1" not in down.text  # no database address to API clients


def _delivery(e: wire.ZoneCountEvent, n: int) -> Delivery:
    return Delivery(
        topic=wire.topic(e.site, e.device, wire.Channel.EVENT), payload=wire.encode(e), qos=1, packet_id=n,
        generation=0, received_at=time.time(),
    )  # fmt: skip


@pytest.mark.cluster
@pytest.mark.timeout(120)  # a hang (a commit waiting for a stopped standby) fails, and stops its clusters
@pytest.mark.usefixtures("cluster_ok")
def test_promote_loses_no_acknowledged_event() -> None:
    """Kill the primary mid-stream, promote the standby: every receipted event is on the new primary."""
    with primary_and_standby("on") as (primary, standby):
        assert standby is not None
        # Both nodes in one DSN: libpq takes the first that accepts writes, so after the promote the
        # store's reconnect lands on the standby without any setting changed.
        multi = (
            f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/postgres"
            "?target_session_attrs=read-write&connect_timeout=3"
        )
        store = PostgresStore(multi)
        ingestor = Ingestor(BrokerConfig(), store, client_id="cluster-test", min_device_k=3)
        acked: set[str] = set()
        sent: set[str] = set()
        batches = [0]
        done_at: list[float] = []
        stop = threading.Event()
        failure: list[BaseException] = []

        def pump() -> None:
            i = 0
            try:
                while not stop.is_set():
                    evs = _events(25, device=f"cam-{i % 4:02d}", start=i * 25)
                    sent.update(e.id for e in evs)
                    out = ingestor._on_batch([_delivery(e, i * 25 + j) for j, e in enumerate(evs)])
                    assert out is not None  # None only when the ingestor stops
                    for _topic, body in out:  # the receipts: what the devices may now forget
                        acked.update(msgpack.unpackb(body)["ids"])
                    batches[0] += 1
                    done_at.append(time.monotonic())
                    i += 1
            except BaseException as exc:
                failure.append(exc)

        worker = threading.Thread(target=pump, daemon=True)
        worker.start()
        try:
            _wait(lambda: batches[0] >= 20, 20, "20 batches before the kill")
            primary.stop("immediate")  # a crash: the batch in flight gets no answer
            at_kill = batches[0]
            time.sleep(1.0)  # the ingest keeps retrying against a dead primary and a read-only standby
            assert batches[0] <= at_kill + 1, "batches acknowledged with no writable primary"
            promoted_at = time.monotonic()
            standby.promote()
            # The runbook's second step (docs/scaling.md): the new primary inherited
            # synchronous_standby_names and has no standby, so its commits would wait forever;
            # it takes writes alone until a new standby is cloned from it.
            standby.query("ALTER SYSTEM SET synchronous_standby_names = ''")
            standby.query("SELECT pg_reload_conf()")
            _wait(
                lambda: batches[0] >= at_kill + 20,
                30,
                f"20 batches after the promote ({ingestor.stats.last_error})",
            )
        finally:
            stop.set()
            worker.join(timeout=30)
        assert not failure, failure
        resumed = min(t for t in done_at if t > promoted_at) - promoted_at
        # docs/scaling.md quotes this (pytest -s): the promote, the runbook's step 2, the reconnect.
        print(f"\nreceipts again {resumed:.2f} s after `pg_ctl promote` began; {len(acked)} events receipted")
        assert "StoreUnavailableError" in (ingestor.stats.last_error or ""), ingestor.stats.last_error
        on_new = {r[0] for r in standby.query("SELECT id FROM events")}
        assert acked, "nothing was acknowledged"
        lost = acked - on_new
        assert not lost, f"{len(lost)} acknowledged events missing on the promoted standby"
        assert len(acked) == len(sent)  # every batch was eventually stored and receipted
        assert standby.query("SELECT count(*), count(DISTINCT id) FROM events") == [
            (len(on_new), len(on_new))
        ]
        assert standby.query("SELECT pg_is_in_recovery()") == [(False,)]
        store.close()


@pytest.mark.cluster
@pytest.mark.timeout(120)  # a hang (a commit waiting for a stopped standby) fails, and stops its clusters
@pytest.mark.usefixtures("cluster_ok")
def test_commit_not_confirmed_by_the_standby_is_not_acknowledged() -> None:
    """A cancelled wait for the synchronous standby commits on the primary alone: that must raise."""
    with primary_and_standby("on") as (primary, standby):
        assert standby is not None
        store = PostgresStore(primary.url)
        store.add_events(_events(5), time.time())  # the standby is up: returns
        standby.stop("fast")
        result: list[Any] = []

        def write() -> None:
            try:
                result.append(store.add_events(_events(5, start=100), time.time()))
            except BaseException as exc:
                result.append(exc)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        _wait(lambda: _sync_waiters(primary) > 0, 10, "a commit waiting for the standby")
        assert not result, "the commit returned with no standby"
        primary.query("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
        writer.join(timeout=10)
        assert len(result) == 1
        assert isinstance(result[0], StoreUnavailableError), result
        assert "synchronous standby" in str(result[0])
        store.close()


def _sync_waiters(node: PgNode) -> int:
    return int(node.query("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")[0][0])


def _wait(ok: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- the read store's own errors (no cluster needed) ---------------------------------------------


def test_read_db_needs_a_postgres_primary() -> None:
    with pytest.raises(ConfigError, match="SQLite, which has no standby"):
        HubSettings.from_env(db="hub.sqlite", read_db="postgresql://vigie@standby/vigie")
    with pytest.raises(ConfigError, match="not a PostgreSQL URL"):
        HubSettings.from_env(db="postgresql://vigie@primary/vigie", read_db="standby.sqlite")


def test_unreachable_read_db_is_a_clear_error() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(VigieError, match=f"cannot connect to PostgreSQL at .*port={port}") as info:
        ReadOnlyPostgresStore(f"postgresql://vigie:secret@127.0.0.1:{port}/vigie")
    assert "secret" not in str(info.value)  # the password is not printed


def test_serve_refuses_an_unreachable_read_db_at_start() -> None:
    port = free_port()
    env = {**os.environ, "VIGIE_HUB_DB": "postgresql://vigie@127.0.0.1:1/vigie",
           "VIGIE_HUB_READ_DB": f"postgresql://vigie:secret@127.0.0.1:{port}/vigie"}  # fmt: skip
    done = subprocess.run(
        cli("hub", "serve", "--no-ingest", "--port", str(free_port())), env=env, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert (
        f"cannot connect to PostgreSQL at 'user=vigie dbname=vigie host=127.0.0.1 port={port}'" in done.stderr
    )
    assert "VIGIE_HUB_READ_DB" in done.stderr
    assert "Traceback" not in done.stderr
    assert "secret" not in done.stderr


@pytest.fixture
def pg_up() -> None:
    need_service(postgres_available(), f"PostgreSQL ({PG_DSN})")


@pytest.mark.postgres
@pytest.mark.usefixtures("pg_up")
def test_read_db_without_the_schema_is_a_clear_error() -> None:
    with pytest.raises(VigieError, match="has no Vigie schema; this hub needs version"):
        ReadOnlyPostgresStore(PG_DSN, schema=f"t_{uuid.uuid4().hex[:12]}", wait_s=0.3)


@pytest.mark.postgres
@pytest.mark.usefixtures("pg_up")
def test_store_reconnects_after_its_connection_is_killed(pg_store: Any) -> None:
    """A connection cut by the server while idle: the next write, then the next read, reconnect."""
    assert pg_store.add_events(_events(3), time.time()) == 3
    _terminate(pg_store)
    assert pg_store.add_events(_events(2, start=50), time.time()) == 2  # a write: reconnects first
    pid = _terminate(pg_store)
    assert pg_store.count_events() == 5  # a read: reconnected, and in the store's schema again
    assert pg_store._query("SELECT pg_backend_pid()")[0][0] != pid


@pytest.mark.postgres
@pytest.mark.usefixtures("pg_up")
def test_a_timeout_is_not_a_lost_connection(pg_store: Any) -> None:
    """A cancelled statement raises as it is, once, and keeps the connection (no reconnect, no retry)."""
    pid = pg_store._query("SELECT pg_backend_pid()")[0][0]
    pg_store._db.execute("SET statement_timeout = 200")
    t = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled):
        pg_store._query("SELECT pg_sleep(2)")
    with pytest.raises(psycopg.errors.QueryCanceled), pg_store._tx() as cur:
        cur.execute("SELECT pg_sleep(2)")
    assert time.monotonic() - t < 1.5  # neither was run a second time
    assert pg_store._query("SELECT pg_backend_pid()")[0][0] == pid
    assert pg_store.add_events(_events(2), time.time()) == 2  # the transaction was rolled back


def _terminate(store: Any) -> int:
    pid = int(store._query("SELECT pg_backend_pid()")[0][0])
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    return pid


def test_durability_warning_names_the_setting_to_fix() -> None:
    assert durability_warning("on", "standby1") is None
    assert durability_warning("remote_apply", "ANY 1 (s1, s2)") is None
    no_standby = durability_warning("on", "")
    assert no_standby is not None
    assert "synchronous_standby_names is empty" in no_standby
    local = durability_warning("local", "standby1")
    assert local is not None
    assert "synchronous_commit is 'local'" in local


@pytest.mark.cluster
@pytest.mark.timeout(120)  # a hang (a commit waiting for a stopped standby) fails, and stops its clusters
@pytest.mark.usefixtures("cluster_ok")
def test_durability_of_a_lone_and_a_sync_primary() -> None:
    with primary_and_standby(None, standby=False) as (primary, _):
        store = PostgresStore(primary.url)
        assert "synchronous_standby_names is empty" in (primary_durability(store) or "")
        store.close()
    with primary_and_standby("on") as (primary, _):
        store = PostgresStore(primary.url)
        assert primary_durability(store) is None
        store.close()
