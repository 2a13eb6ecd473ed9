"""A city's store: fill SQLite and PostgreSQL to N events through the store API, then time the analysts'
queries (issue 24).

The city: 1,600 cameras with two zones each, one ``zone_count`` per zone every 10 s; a quarter of the
cameras also count one line every 10 s; one camera in ten carries a sound-level sensor (60-s windows);
about one alert per camera per hour. That is ~364 events/s, 31 M a day. The cube gets the same number
of rows (N): 400 H3 cells and 16 districts × hours × camera and police categories, written as imports.

For each size in ``--rows`` (filled one after the other in the same store, so the growth from one
size to the next is measured on the same data) it prints bytes per event (events with their indexes;
roll-ups and the cube apart) and p50/p99 over ``--runs`` runs of each query:

* events by device × hour, and by device + zone × day (first page of 1,000);
* roll-ups of one zone (a camera's) × one month, and of one district's zones of that name × one month
  (every page);
* the cube for the city × one week by district and by cell, from the week level: first page and the
  whole walk by cursor; and the same week's hourly rows by cell (what the disclosure layer reads);
* the devices list.

Usage::

    python bench/city_store.py --rows 1e6,1e7 --backends sqlite,postgres [--keep] [--dir /var/tmp/city]
        [--cube-rows 2e6] [--compact-every 120 --compact-grace 120]

``--keep`` reuses a store filled earlier (``--dir`` for SQLite, the schema ``city_store`` for
PostgreSQL) and only adds what is missing. Progress goes to stderr; the table to stdout.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import multiprocessing
import os
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg

from hub.storage import CubeQuery, CubeRow, EventQuery, RollupQuery, Store, walk_cube, walk_rollups
from hub.storage.postgres import PostgresStore
from hub.storage.sqlite import SQLiteStore
from vigie import wire

CAMERAS = 1600
SITES = 16  # one per district
LINE_SHARE = 4  # one camera in four counts a line
SOUND_SHARE = 10  # one camera in ten carries a sound-level sensor
START = 1_791_158_400  # 2026-10-05 00:00Z, a Monday
BATCH = 20_000
BULK = 200_000
# A city hour: 3,200 zone counts and 400 line counts per tick, sound levels and alerts.
HOUR_EVENTS = 360 * (2 * 1600 + 1600 // 4) + 60 * 160 + 1600
LIVE_TAIL_H = 2  # the last hours of a fill go through the live path: hot rows, then compact
HOUR, DAY = 3600, 86_400
CELLS, DISTRICTS = 400, 16
CATEGORIES = (("camera", "person"), ("camera", "bicycle"), ("police", "theft"), ("police", "noise"))
PG_DSN = os.environ.get("VIGIE_PG_DSN", "postgresql://root@127.0.0.1:5432/test")
SCHEMA = "city_store"
MODEL = "ssd-mobilenet-v2-coco-quant@1.0.0"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _device(i: int) -> tuple[str, str]:
    return f"district-{i % SITES:02d}", f"cam-{i:04d}"


def _count(rng: random.Random, high: int) -> int | str:
    v = rng.randint(0, high)
    return "<3" if 0 < v < 3 else v  # k = 3: counts of 1 and 2 travel as "<3"


def _maker(template: wire.Event) -> Callable[..., Any]:
    """A fast constructor: a copy of a template built once (``model_construct`` resolves every default
    field's factory on each call, which made generating the city slower than storing it)."""

    def make(**fields: Any) -> Any:
        return template.model_copy(update=fields)

    return make


_BLANK: dict[str, Any] = {"site": "", "device": "", "id": "", "model": MODEL}
_ZC = _maker(wire.ZoneCountEvent.model_construct(
    **_BLANK, zone="", window_start=0, window_s=10, frames=50, counts={}, mean_counts={}, k=3))  # fmt: skip
_LC = _maker(wire.LineCountEvent.model_construct(
    **_BLANK, line="", window_start=0, window_s=10, forward={}, backward={}, k=3))  # fmt: skip
_MS = _maker(wire.Measurement.model_construct(
    site="", device="", id="", sensor="", quantity="sound_level", unit="dB(A)", window_start=0,
    window_s=60, samples=600, stats={}))  # fmt: skip
_AL = _maker(wire.Alert.model_construct(
    **_BLANK, rule="crowd_density", zone="parvis", ts=0, value=12.0, threshold=10.0))  # fmt: skip


def tick_events(t: int, rng: random.Random) -> list[wire.Event]:
    """Every event the city sends for the 10-s window starting at ``t`` (built without validation)."""
    out: list[wire.Event] = []
    zc = _ZC
    for i in range(CAMERAS):
        site, device = _device(i)
        for zone in ("entree", "parvis"):
            counts = {"person": _count(rng, 12), "bicycle": _count(rng, 3)}
            means = {k: round(v * 0.6, 2) for k, v in counts.items() if isinstance(v, int)}
            out.append(zc(site=site, device=device, zone=zone, id=wire.new_event_id(t), window_start=t,
                          counts=counts, mean_counts=means))  # fmt: skip
        if i % LINE_SHARE == 0:
            out.append(_LC(
                site=site, device=device, line="porte", id=wire.new_event_id(t), window_start=t,
                forward={"person": _count(rng, 6)}, backward={"person": _count(rng, 6)},
            ))  # fmt: skip
        if i % SOUND_SHARE == 0 and t % 60 == 0:
            out.append(_MS(
                site=site, device=device, sensor="micro", id=wire.new_event_id(t), window_start=t,
                stats={"laeq": round(rng.uniform(45, 75), 1), "lamax": round(rng.uniform(60, 95), 1)},
            ))  # fmt: skip
        if rng.random() < 10 / 3600:  # about one alert per camera per hour
            out.append(_AL(site=site, device=device, id=wire.new_event_id(t), ts=t))
    return out


def batches(first_tick: int, rng: random.Random) -> Iterator[tuple[int, list[wire.Event]]]:
    """(next tick, ~BATCH events) from ``first_tick`` on, in time order."""
    t = first_tick
    while True:
        batch: list[wire.Event] = []
        while len(batch) < BATCH:
            batch += tick_events(t, rng)
            t += 10
        yield t, batch


def history_hour(hour: int, rng: random.Random) -> Iterator[list[wire.Event]]:
    """One whole hour of the city from ``hour`` on, stream-major, in batches of about BULK events.

    What a hub that has run for days holds is mostly packed hours. ``add_events`` writes a batch's
    large stream × hour groups straight into segments, as ``compact`` would have packed them, so the
    history fills several times faster than through the live, time-major path. Batches are cut
    between devices so that no stream × hour is split.
    """
    events: list[wire.Event] = []
    for t in range(hour, hour + HOUR, 10):
        events += tick_events(t, rng)
    events.sort(key=lambda e: (e.site, e.device))
    batch: list[wire.Event] = []
    for _, group in itertools.groupby(events, key=lambda e: (e.site, e.device)):
        batch += group
        if len(batch) >= BULK:
            yield batch
            batch = []
    if batch:
        yield batch


_WORKER: dict[str, Store] = {}


def _history_worker(backend: str, where: str, hour: int) -> tuple[int, float]:
    """One history hour written by a pool worker (its own store); returns (events, generation s)."""
    if backend not in _WORKER:
        _WORKER[backend] = (
            SQLiteStore(Path(where)) if backend == "sqlite" else PostgresStore(PG_DSN, schema=where)
        )
    store = _WORKER[backend]
    rng = random.Random(hour)  # each hour its own, reproducible, whichever worker writes it
    added, gen = 0, 0.0
    batches_ = history_hour(hour, rng)
    while True:
        g0 = time.perf_counter()
        batch = next(batches_, [])
        gen += time.perf_counter() - g0
        if not batch:
            return added, gen
        store.add_events(batch, time.time())
        added += len(batch)


def fill_history(backend: str, where: str, first: int, hours: int, jobs: int) -> Iterator[tuple[int, float]]:
    """Whole hours from ``first`` on, ``jobs`` hours at a time in worker processes (each hour touches
    only its own streams × hour, so the writers do not wait on each other); yields (events, gen s)."""
    todo = [first + h * HOUR for h in range(hours)]
    if jobs <= 1:
        for hour in todo:
            n, spent = _history_worker(backend, where, hour)
            yield n, spent
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(jobs) as pool:
        results = pool.imap_unordered(functools.partial(_history_worker, backend, where), todo)
        for n, spent in results:
            yield n, spent / jobs


def cube_hour(hour: int, rng: random.Random) -> list[CubeRow]:
    """One hour of the city's cube: cells and districts × sources × categories."""
    rows = []
    for z in range(CELLS + DISTRICTS):
        zone = f"h3:88396{z:010x}" if z < CELLS else f"poly:arrondissement-{z - CELLS + 1:02d}"
        scale = 1 if z < CELLS else CELLS // DISTRICTS
        for source, category in CATEGORIES:
            if source == "police" and rng.random() < 0.7:
                continue  # incidents are sparse: most cells have none in an hour
            rows.append(CubeRow(zone, hour, source, category, float(rng.randint(0, 40) * scale)))
    return rows


# --- measurements -----------------------------------------------------------------------------------


def table_bytes(store: Store, where: str) -> dict[str, int]:
    """Bytes per table, its indexes (and TOAST) included, read beside the store (not through it)."""
    if store.backend == "sqlite":
        with sqlite3.connect(where) as conn:
            owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master").fetchall())
            sizes: dict[str, int] = {}
            for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
                table = owner.get(name, name)
                sizes[table] = sizes.get(table, 0) + int(size)
            return sizes
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT coalesce(pi.relname, c.relname),"
            " sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " LEFT JOIN pg_inherits i ON i.inhrelid = c.oid LEFT JOIN pg_class pi ON pi.oid = i.inhparent"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'm') GROUP BY 1",
            (SCHEMA,),
        ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}


def split_bytes(sizes: dict[str, int]) -> dict[str, int]:
    """Roll-ups, the cube (with its levels) and the events: every other table but the small ones."""
    small = {"devices", "schema_version", "imports", "purges", "ingest_workers", "quarantine"}
    cube = sizes.get("cube", 0) + sizes.get("cube_levels", 0)
    rollups = sizes.get("rollups", 0)
    events = sum(v for k, v in sizes.items() if k not in small | {"cube", "cube_levels", "rollups"})
    return {"events": events, "rollups": rollups, "cube": cube}


def analyse(store: Store) -> None:
    """Fresh planner statistics for what the fill wrote (autovacuum may be off, or late)."""
    if store.backend == "postgres":
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"SET search_path TO {SCHEMA}")
            conn.execute("VACUUM (ANALYZE)")
    else:
        store.maintain_rollups()


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, float, Any]:
    """p50 and p99 in ms over ``runs`` calls (after one warm-up), and the last result."""
    fn()
    spent = []
    result = None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        spent.append((time.perf_counter() - t0) * 1000)
    spent.sort()
    p99 = spent[min(len(spent) - 1, round(0.99 * (len(spent) - 1)))]
    return statistics.median(spent), p99, result


def queries(
    store: Store, last_tick: int, runs: int, rng: random.Random
) -> list[tuple[str, float, float, str]]:
    """(name, p50 ms, p99 ms, rows per answer) of each analyst query over what is stored."""
    hours = max(1, (last_tick - START) // HOUR)
    days = max(1, (last_tick - START) // DAY)

    def some_device() -> tuple[str, str]:
        return _device(rng.randrange(CAMERAS))

    def device_hour() -> int:
        site, device = some_device()
        h = START + rng.randrange(hours) * HOUR
        rows, _ = store.list_events(EventQuery(site=site, device=device, since=h, until=h + HOUR, limit=1000))
        return len(rows)

    def zone_day() -> int:
        site, device = some_device()
        d = START + rng.randrange(days) * DAY
        rows, _ = store.list_events(
            EventQuery(site=site, device=device, place="parvis", since=d, until=d + DAY, limit=1000)
        )
        return len(rows)

    def zone_month() -> int:
        site, device = some_device()  # a zone is a camera's: (site, device, zone)
        q = RollupQuery(site=site, device=device, place="parvis", since=START, until=START + 30 * DAY)
        return sum(1 for _ in walk_rollups(store, q))

    def district_month() -> int:
        site, _ = some_device()  # every camera's "parvis" of one district: ~100 zones
        q = RollupQuery(site=site, place="parvis", since=START, until=START + 30 * DAY, limit=10_000)
        return sum(1 for _ in walk_rollups(store, q))

    cube_weeks = max(1, store_cube_hours(store) // 168)

    def week(prefix: str, level: str, first_only: bool) -> Callable[[], int]:
        def run() -> int:
            w = START + rng.randrange(cube_weeks) * 7 * DAY
            q = CubeQuery(zone_prefix=prefix, start=w, end=w + 7 * DAY, level=level, limit=1000)  # type: ignore[arg-type]
            if first_only:
                return len(store.query_cube(q).rows)
            return sum(1 for _ in walk_cube(store, q))

        return run

    plan: list[tuple[str, Callable[[], int], int]] = [
        ("events device×hour", device_hour, runs),
        ("events device+zone×day (page 1)", zone_day, runs),
        ("roll-ups zone×month (all pages)", zone_month, runs),
        ("roll-ups district's zones×month (all pages)", district_month, runs),
        ("cube city×week by district, first page", week("poly:", "week", True), runs),
        ("cube city×week by district, walk", week("poly:", "week", False), runs),
        ("cube city×week by cell, first page", week("h3:", "week", True), runs),
        ("cube city×week by cell, walk", week("h3:", "week", False), runs),
        ("cube city×week hourly by cell, page 1", week("h3:", "hour", True), runs),
        ("cube city×week hourly by cell, walk", week("h3:", "hour", False), max(5, runs // 10)),
        ("devices", lambda: len(store.list_devices()), runs),
    ]
    out = []
    for name, fn, n in plan:
        p50, p99, rows = timed(fn, n)
        out.append((name, p50, p99, f"{rows} ({n} runs)"))
        log(f"  {name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms, {rows} rows")
    return out


_CUBE_HOURS: dict[int, int] = {}


def store_cube_hours(store: Store) -> int:
    return _CUBE_HOURS.get(id(store), 1)


# --- the run ----------------------------------------------------------------------------------------


def open_backend(backend: str, folder: Path, keep: bool) -> tuple[Store, str]:
    if backend == "sqlite":
        path = folder / "city.sqlite"
        if not keep:
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
        return SQLiteStore(path), str(path)
    if not keep:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    return PostgresStore(PG_DSN, schema=SCHEMA), SCHEMA


def fill_cube(store: Store, target: int, rng: random.Random) -> int:
    """Imports a day of the cube at a time until it holds ``target`` rows; returns the hours it covers."""
    hour, rows = START, 0
    latest = store.list_imports(limit=1)
    if latest:  # --keep: carry on after the last day imported
        hour, rows = int(latest[0]["report"]["next_hour"]), int(latest[0]["report"]["total"])
    while rows < target:
        day: list[CubeRow] = []
        for h in range(24):
            day += cube_hour(hour + h * HOUR, rng)
        day = day[: target - rows]
        rows += len(day)
        hour += DAY
        report = {"rows": len(day), "total": rows, "next_hour": hour}
        store.record_import("police", f"{hour:064x}", f"city-{hour}.csv", report, day, time.time())
    return (hour - START) // HOUR


def run(
    backend: str,
    sizes: Sequence[int],
    runs: int,
    folder: Path,
    keep: bool,
    cube_max: int | None = None,
    bulk: bool = True,
    jobs: int = 1,
    compact_every: int = 120,
    compact_grace: int = 120,
) -> None:
    rng = random.Random(24)
    store, where = open_backend(backend, folder, keep)
    stored = store.count_events()
    newest, _ = store.list_events(EventQuery(limit=1))
    tick = int(newest[0].get("window_start", newest[0].get("ts", START))) + 60 if newest else START
    tick -= tick % 60
    since = time.strftime("%Y-%m-%d %H:%M", time.gmtime(tick))
    log(f"{backend}: {stored:,} events stored, filling from {since}")
    previous: dict[str, float] | None = None
    for size in sizes:
        t0 = time.perf_counter()
        gen = 0.0
        added = 0
        source: Iterator[tuple[int, list[wire.Event]]] | None = None
        last_job = tick
        while stored < size:
            if bulk and tick % HOUR == 0 and size - stored > LIVE_TAIL_H * HOUR_EVENTS:
                source = None  # the live generator restarts from the next tick after the hour
                hours = max(1, (size - stored - LIVE_TAIL_H * HOUR_EVENTS) // HOUR_EVENTS)
                for n, spent in fill_history(backend, where, tick, hours, jobs):
                    added += n
                    stored += n
                    gen += spent  # wall time spent generating, on the slowest worker
                    log(f"{backend}: {stored:,} events (history, packed directly),"
                        f" {added / (time.perf_counter() - t0):,.0f} events/s wall")  # fmt: skip
                tick += hours * HOUR
                continue
            if source is None:
                source = batches(tick, rng)
            g0 = time.perf_counter()
            tick, batch = next(source)
            gen += time.perf_counter() - g0
            batch = batch[: size - stored]
            added += store.add_events(batch, time.time())
            stored += len(batch)
            if compact_every and tick // compact_every != last_job // compact_every:
                # The hub's compaction job (hub/compact_job.py, every compact_every_s) packs what
                # started compact_grace_s ago; the hot table's space is then reused.
                last_job = tick
                store.compact_recent(float(tick), compact_grace)
            elif not compact_every and tick // HOUR != last_job // HOUR:
                # Before it (--compact-every 0): only the purge job's hourly ``compact``, which packs
                # the hours that ended over an hour ago.
                last_job = tick
                store.compact(float(tick))
            if added and added % (BATCH * 25) < len(batch):
                rate = added / (time.perf_counter() - t0 - gen)
                log(f"{backend}: {stored:,} events, store {rate:,.0f} events/s")
        fill_s = time.perf_counter() - t0 - gen
        # The job once more at the end, at the data's own clock (as on a live hub just after a run);
        # the bytes just before it are the other end of the job's cycle.
        analyse(store)
        before_job = split_bytes(table_bytes(store, where))["events"] / max(1, store.count_events())
        k0 = time.perf_counter()
        if compact_every:
            packed = store.compact_recent(float(tick), compact_grace)
        else:
            packed = store.compact(float(tick))
        log(f"{backend}: {packed:,} events packed into segments in {time.perf_counter() - k0:.0f} s")
        c0 = time.perf_counter()
        cube_rows = size if cube_max is None else min(size, cube_max)
        _CUBE_HOURS[id(store)] = fill_cube(store, cube_rows, rng)
        cube_s = time.perf_counter() - c0
        analyse(store)
        parts = split_bytes(table_bytes(store, where))
        events = store.count_events()
        log(f"{backend} at {events:,}: {parts}; fill {added / fill_s if added else 0:,.0f} events/s,"
            f" cube written in {cube_s:.0f} s")  # fmt: skip
        results = queries(store, tick, runs, rng)
        now = {"B/event": parts["events"] / events}
        print(f"\n## {backend}, {events:,} events, {cube_rows:,} cube rows")
        ev, ru, cu = parts["events"], parts["rollups"], parts["cube"]
        print(f"events+indexes {ev / events:.0f} B/event ({ev / 1e6:.0f} MB; {before_job:.0f} B/event"
              f" just before the job's last run);"
              f" roll-ups {ru / events:.0f} B/event ({ru / 1e6:.0f} MB);"
              f" cube+levels {cu / 1e6:.0f} MB ({cu / cube_rows:.0f} B per cube row)")  # fmt: skip
        if added:
            print(f"fill: {added / fill_s:,.0f} events/s through add_events (generator time excluded)")
        print("| query | p50 ms | p99 ms | rows |" + (" p50 growth |" if previous else ""))
        print("|---|---:|---:|---|" + ("---:|" if previous else ""))
        for name, p50, p99, rows in results:
            growth = f" ×{p50 / previous[name]:.2f} |" if previous and previous.get(name) else ""
            print(f"| {name} | {p50:.1f} | {p99:.1f} | {rows} |{growth}")
            now[name] = p50
        sys.stdout.flush()
        previous = now
    store.close()


def main(argv: Sequence[str] | None = None) -> None:
    global SCHEMA
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="1e6", help="Comma-separated sizes, e.g. 1e6,1e7,1e8.")
    ap.add_argument("--backends", default="sqlite,postgres", help="sqlite, postgres or both.")
    ap.add_argument("--runs", type=int, default=50, help="Runs of each query (p99 needs ≥ 50).")
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/vigie-city-store"), help="SQLite's folder.")
    ap.add_argument("--keep", action="store_true", help="Reuse the stores filled by an earlier run.")
    ap.add_argument(
        "--fill",
        choices=("history", "live"),
        default="history",
        help="history: whole past hours stream-major (packed on write), the last hours live;"
        " live: every event through the live, time-major path (slower, same final layout).",
    )
    ap.add_argument(
        "--compact-every",
        type=int,
        default=120,
        help="Seconds of data between runs of the compaction job (compact_every_s); 0: only the"
        " hourly compact of the purge job, as before it.",
    )
    ap.add_argument("--compact-grace", type=int, default=120, help="The job's compact_grace_s.")
    ap.add_argument("--cube-rows", type=float, help="Cap the cube's rows (default: as many as events).")
    ap.add_argument("--jobs", type=int, default=1, help="Processes writing history hours at once.")
    ap.add_argument("--schema", default=SCHEMA, help="PostgreSQL schema (dropped unless --keep).")
    args = ap.parse_args(argv)
    SCHEMA = args.schema
    sizes = sorted(int(float(s)) for s in args.rows.split(","))
    args.dir.mkdir(parents=True, exist_ok=True)
    for backend in args.backends.split(","):
        cube_max = None if args.cube_rows is None else int(args.cube_rows)
        run(
            backend.strip(),
            sizes,
            args.runs,
            args.dir,
            args.keep,
            cube_max,
            args.fill == "history",
            args.jobs,
            args.compact_every,
            args.compact_grace,
        )


if __name__ == "__main__":
    main()
