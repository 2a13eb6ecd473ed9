"""How much PostgreSQL's roll-ups bloat under live ingest with autovacuum off, before and after migration 12.

Every live batch updates the current hour's roll-up rows in place: each update leaves a dead row
version behind. Issue 24 found the table 12× its live size on a server with autovacuum off. This
script ingests ``--batches`` live batches (one 10-s window of ``--devices`` cameras × 2 zones each)
through the store API into three stores, each with the table's autovacuum disabled
(``autovacuum_enabled = false``, the per-table form of a server that has it off):

* ``before``: the roll-ups table as migrations 1-11 left it (fillfactor 100, server thresholds);
* ``fillfactor``: as migration 12 leaves it (fillfactor 70: HOT updates, pruned on the page);
* ``fillfactor+vacuum``: the same, and ``maintain_rollups()`` (``VACUUM (ANALYZE) rollups``) every
  ``--vacuum-every`` batches, as the hub's purge job does every hour (360 batches of 10 s).

It prints the table's size (with its indexes), its size after ``VACUUM FULL`` (the live data), the
ratio, and the share of HOT updates.

Usage::

    python bench/rollup_bloat.py --devices 400 --batches 720
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Sequence

import psycopg

from hub.storage.postgres import PostgresStore
from vigie import wire

PG_DSN = os.environ.get("VIGIE_PG_DSN", "postgresql://root@127.0.0.1:5432/test")
START = 1_791_158_400  # 2026-10-05 00:00Z
MODEL = "ssd-mobilenet-v2-coco-quant@1.0.0"


def batch(t: int, devices: int, rng: random.Random) -> list[wire.Event]:
    out: list[wire.Event] = []
    for i in range(devices):
        for zone in ("entree", "parvis"):
            person = rng.randint(3, 12)
            out.append(wire.ZoneCountEvent.model_construct(
                site=f"district-{i % 16:02d}", device=f"cam-{i:04d}", zone=zone, id=wire.new_event_id(t),
                window_start=t, window_s=10, frames=50, counts={"person": person, "bicycle": "<3"},
                mean_counts={"person": person * 0.6}, model=MODEL, k=3,
            ))  # fmt: skip
    return out


def measure(
    name: str, devices: int, batches: int, vacuum_every: int | None, old_table: bool, fillfactor: int | None
) -> None:
    schema = f"bloat_{name.replace('+', '_')}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    store = PostgresStore(PG_DSN, schema=schema)
    rng = random.Random(24)
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        if old_table:  # the table as it was before migration 12
            conn.execute(
                "ALTER TABLE rollups RESET (fillfactor, autovacuum_vacuum_scale_factor,"
                " autovacuum_analyze_scale_factor, autovacuum_vacuum_insert_scale_factor)"
            )
        elif fillfactor is not None:  # another fillfactor than migration 12's, to compare
            conn.execute(f"ALTER TABLE rollups SET (fillfactor = {int(fillfactor)})")
        conn.execute("ALTER TABLE rollups SET (autovacuum_enabled = false)")
        t0 = time.perf_counter()
        hourly: list[float] = []  # the table's size at the end of each hour of ingest, MB
        for b in range(batches):
            store.add_events(batch(START + 10 * b, devices, rng), time.time())
            if vacuum_every and (b + 1) % vacuum_every == 0:
                store.maintain_rollups()
            if (b + 1) % 360 == 0:
                got = conn.execute("SELECT pg_total_relation_size('rollups')").fetchone()
                hourly.append(int(got[0]) / 1e6 if got else 0.0)
            if (b + 1) % 120 == 0:
                print(f"  {name}: {b + 1}/{batches} batches", file=sys.stderr, flush=True)
        spent = time.perf_counter() - t0
        store.close()  # a backend sends its table statistics when it exits, at the latest
        time.sleep(1)
        size, index = conn.execute(
            "SELECT pg_total_relation_size('rollups'), pg_indexes_size('rollups')"
        ).fetchone()  # type: ignore[misc]
        upd, hot, live = conn.execute(
            "SELECT n_tup_upd, n_tup_hot_upd, n_live_tup FROM pg_stat_user_tables"
            " WHERE relname = 'rollups' AND schemaname = %s",
            (schema,),
        ).fetchone()  # type: ignore[misc]
        conn.execute("VACUUM FULL rollups")
        packed = conn.execute("SELECT pg_total_relation_size('rollups')").fetchone()[0]  # type: ignore[index]
    print(
        f"| {name} | {size / 1e6:.1f} ({index / 1e6:.1f}) | {packed / 1e6:.1f} | {size / packed:.2f}×"
        f" | {live:,} |"
        f" {upd:,} | {100 * hot / upd if upd else 0:.0f} % | {', '.join(f'{mb:.1f}' for mb in hourly)} |"
        f" {spent:.0f} s |",
        flush=True,
    )
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=400, help="Cameras (two zones each).")
    ap.add_argument("--batches", type=int, default=720, help="Live batches, one 10-s window each.")
    ap.add_argument("--vacuum-every", type=int, default=360, help="Batches between two maintain_rollups().")
    ap.add_argument("--configs", default="before,fillfactor,fillfactor+vacuum", help="Which tables to run.")
    ap.add_argument("--fillfactor", type=int, help="Try another fillfactor than migration 12's.")
    args = ap.parse_args(argv)
    print(f"{args.devices} cameras × 2 zones, {args.batches} batches of 10 s, roll-ups' autovacuum off")
    print("| table | MB (indexes) | MB after VACUUM FULL | bloat | live rows | updates | HOT |"
          " MB at each hour's end | ingest |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    configs = {
        "before": (None, True),
        "fillfactor": (None, False),
        "fillfactor+vacuum": (args.vacuum_every, False),
    }
    for name in args.configs.split(","):
        vacuum_every, old_table = configs[name]
        measure(
            name, args.devices, args.batches, vacuum_every, old_table=old_table, fillfactor=args.fillfactor
        )


if __name__ == "__main__":
    main()
