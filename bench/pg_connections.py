#!/usr/bin/env python3
"""How many PostgreSQL connections a hub holds: per API worker, per ingest process, on each node.

Starts a primary and a streaming standby (tests/pgcluster.py), then ``vigie hub serve`` with the given
workers and ``read_db`` on the standby, sends concurrent analysts' requests, and counts the client
connections each node sees (``pg_stat_activity``). ``--pgbouncer``: the same through a PgBouncer
in transaction mode in front of each node (3 server connections each, ``db_pooler: pgbouncer``), the
live streams' LISTEN straight to the primary (``live_db``).

    .venv/bin/python bench/pg_connections.py --workers 1 --workers 4 --broker 127.0.0.1:1883
    .venv/bin/python bench/pg_connections.py --workers 8 --broker 127.0.0.1:1883 --pgbouncer
    .venv/bin/python bench/pg_connections.py --read-cost 3000

``--read-cost N``: what a read costs through PgBouncer (N ``SELECT 1`` by one store, one after the
other): straight to PostgreSQL, through PgBouncer with the schema sent per transaction, and through
PgBouncer with no session state to send (the server's default schema).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import httpx

from hub.storage.postgres import PostgresStore
from tests.pgbouncer import running_pgbouncer
from tests.pgcluster import PgNode, primary_and_standby
from vigie.netutil import free_port, wait_for_port

COUNT = (
    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
)


def _connections(node: PgNode) -> int:
    return int(node.query(COUNT)[0][0])


POOL = 3


def run(workers: int, broker: str | None, pgbouncer: bool) -> str:
    with primary_and_standby(None) as (primary, standby), ExitStack() as stack:
        assert standby is not None
        port = free_port()
        env = {
            **os.environ,
            "VIGIE_HUB_DB": primary.url,
            "VIGIE_HUB_READ_DB": standby.url,
            "VIGIE_HUB_AUTH": "off",
        }
        if pgbouncer:  # one PgBouncer per node, as in front of each node on its host
            bouncers = [
                stack.enter_context(
                    running_pgbouncer(pool_size=POOL, server=f"host=127.0.0.1 port={n.port} dbname=postgres",
                                      user="postgres")
                )
                for n in (primary, standby)
            ]  # fmt: skip
            env.update(
                VIGIE_HUB_DB=bouncers[0].url(user="postgres"),
                VIGIE_HUB_READ_DB=bouncers[1].url(user="postgres"),
                VIGIE_HUB_DB_POOLER="pgbouncer",
                VIGIE_HUB_LIVE_DB=primary.url,
            )
        ingest = ["--broker", broker] if broker else ["--no-ingest"]
        cmd = [sys.executable, "-m", "vigie", "hub", "serve", "--port", str(port), "--workers", str(workers)]
        # Its log to a file: a pipe nobody reads fills up and blocks the hub (8 workers did here).
        log = stack.enter_context(tempfile.TemporaryFile())
        proc = subprocess.Popen([*cmd, *ingest], env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            if not wait_for_port(port, timeout=60):
                log.seek(0)
                raise RuntimeError(f"hub did not start: {log.read().decode(errors='replace')[-3000:]}")
            url = f"http://127.0.0.1:{port}"
            with ThreadPoolExecutor(32) as pool:  # 32 analysts at once, over every worker
                codes = list(
                    pool.map(lambda _: httpx.get(f"{url}/v1/rollups", timeout=30).status_code, range(400))
                )
            time.sleep(1.0)
            on_primary, on_standby = _connections(primary), _connections(standby)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    ok = sum(c == 200 for c in codes)
    return (
        f"{workers} API worker(s), ingest {'on' if broker else 'off'}"
        f"{f', through PgBouncer (pool {POOL})' if pgbouncer else ''}: {on_primary} connection(s) on the "
        f"primary, {on_standby} on the standby, after 400 requests from 32 clients ({ok} answered 200)"
    )


def _per_read_us(store: PostgresStore, reads: int) -> float:
    store.ping()
    started = time.perf_counter()
    for _ in range(reads):
        store.ping()
    return (time.perf_counter() - started) / reads * 1e6


def read_cost(reads: int) -> str:
    with primary_and_standby(None, standby=False) as (primary, _), ExitStack() as stack:
        server = f"host=127.0.0.1 port={primary.port} dbname=postgres"
        bouncer = stack.enter_context(running_pgbouncer(pool_size=POOL, server=server, user="postgres"))
        stores = {
            "direct, schema set once per connection": PostgresStore(primary.url, schema="bench"),
            "PgBouncer, schema per transaction": PostgresStore(
                bouncer.url(user="postgres"), schema="bench", pooler="pgbouncer"
            ),
            "PgBouncer, default schema (nothing per transaction)": PostgresStore(
                bouncer.url(user="postgres"), pooler="pgbouncer"
            ),
        }
        lines = [f"{name}: {_per_read_us(store, reads):.0f} µs per read" for name, store in stores.items()]
        for store in stores.values():
            store.close()
    return f"{reads} reads (SELECT 1) each, one after the other:\n  " + "\n  ".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, action="append", help="API worker processes (repeatable).")
    ap.add_argument("--broker", help="host:port of an MQTT broker for the ingest (unset: --no-ingest).")
    ap.add_argument("--pgbouncer", action="store_true", help="Through PgBouncer (transaction mode).")
    ap.add_argument("--read-cost", type=int, metavar="N", help="Time N reads direct and through PgBouncer.")
    args = ap.parse_args()
    if args.read_cost:
        print(read_cost(args.read_cost), flush=True)
        return
    for workers in args.workers or [1, 4]:
        print(run(workers, args.broker, args.pgbouncer), flush=True)


if __name__ == "__main__":
    main()
