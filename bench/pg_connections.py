#!/usr/bin/env python3
"""How many PostgreSQL connections a hub holds: per API worker, per ingest process, on each node.

Starts a primary and a streaming standby (tests/pgcluster.py), then ``vigie hub serve`` with the given
workers and ``read_db`` on the standby, sends concurrent analysts' requests, and counts the client
connections each node sees (``pg_stat_activity``). ``--pgbouncer``: the same through a PgBouncer
in transaction mode in front of each node (3 server connections each, ``db_pooler: pgbouncer``), the
live streams' LISTEN straight to the primary (``live_db``).

    .venv/bin/python bench/pg_connections.py --workers 1 --workers 4 --broker 127.0.0.1:1883
    .venv/bin/python bench/pg_connections.py --workers 8 --broker 127.0.0.1:1883 --pgbouncer
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import httpx

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
        proc = subprocess.Popen([*cmd, *ingest], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            if not wait_for_port(port, timeout=60):
                raise RuntimeError(f"hub did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, action="append", help="API worker processes (repeatable).")
    ap.add_argument("--broker", help="host:port of an MQTT broker for the ingest (unset: --no-ingest).")
    ap.add_argument("--pgbouncer", action="store_true", help="Through PgBouncer (transaction mode).")
    args = ap.parse_args()
    for workers in args.workers or [1, 4]:
        print(run(workers, args.broker, args.pgbouncer), flush=True)


if __name__ == "__main__":
    main()
