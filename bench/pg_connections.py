#!/usr/bin/env python3
"""How many PostgreSQL connections a hub holds: per API worker, per ingest process, on each node.

Starts a primary and a streaming standby (tests/pgcluster.py), then ``vigie hub serve`` with the given
workers and ``read_db`` on the standby, sends concurrent analysts' requests, and counts the client
connections each node sees (``pg_stat_activity``).

    .venv/bin/python bench/pg_connections.py --workers 1 --workers 4 --broker 127.0.0.1:1883
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.pgcluster import PgNode, primary_and_standby
from vigie.netutil import free_port, wait_for_port

COUNT = (
    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
)


def _connections(node: PgNode) -> int:
    return int(node.query(COUNT)[0][0])


def run(workers: int, broker: str | None) -> str:
    with primary_and_standby(None) as (primary, standby):
        assert standby is not None
        port = free_port()
        env = {
            **os.environ,
            "VIGIE_HUB_DB": primary.url,
            "VIGIE_HUB_READ_DB": standby.url,
            "VIGIE_HUB_AUTH": "off",
        }
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
        f"{workers} API worker(s), ingest {'on' if broker else 'off'}: {on_primary} connection(s) on the "
        f"primary, {on_standby} on the standby, after 400 requests from 32 clients ({ok} answered 200)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, action="append", help="API worker processes (repeatable).")
    ap.add_argument("--broker", help="host:port of an MQTT broker for the ingest (unset: --no-ingest).")
    args = ap.parse_args()
    for workers in args.workers or [1, 4]:
        print(run(workers, args.broker), flush=True)


if __name__ == "__main__":
    main()
