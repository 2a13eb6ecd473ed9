"""The storage contract for aggregates (issue 24), on SQLite and PostgreSQL alike: roll-ups and the cube
come in keyset pages that say when more follow, and the cube's day/week/month sums track its hours."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from hub.storage import CubeQuery, CubeRow, Retention, RollupQuery, walk_anomalies, walk_cube, walk_rollups
from hub.storage.cubelevels import POSTGRES_MONTH_OF, SQLITE_MONTH_OF, UTC, backfill_sql
from tests.test_wire import WINDOW
from vigie import wire

HOUR = 3600
# 2026-11-29 22:00Z: a Sunday night, so 30 hours cross a day, an ISO week and a month of weeks.
NIGHT = 1_795_989_600


def _alerts(n: int) -> list[wire.Alert]:
    """``n`` alerts in ``n`` places: exactly one roll-up row each."""
    return [
        wire.Alert(site="s", device="d", id=wire.new_event_id(WINDOW), rule="intrusion", zone=f"z{i:02d}",
                   ts=WINDOW, value=4.0, threshold=3.0, model="m@1")
        for i in range(n)
    ]  # fmt: skip


def _chain(fetch: Any, limit: int) -> list[Any]:
    """Every page of ``fetch(after)`` until one says no more; each page checked on the way."""
    pages = []
    after = None
    while True:
        page = fetch(after)
        assert len(page.rows) <= limit
        pages.append(page)
        if page.next is None:
            return pages
        assert len(page.rows) == limit  # a page that says more follows is a full one
        after = page.next


def test_rollups_are_never_cut_without_a_cursor(store: Any) -> None:
    assert store.add_events(_alerts(25), 1.0) == 25
    pages = _chain(lambda after: store.list_rollups(RollupQuery(limit=10, after=after)), 10)
    assert [len(p.rows) for p in pages] == [10, 10, 5]
    assert pages[-1].next is None
    places = [r["place"] for p in pages for r in p.rows]
    assert places == [f"z{i:02d}" for i in range(25)]  # in order, each once
    # Exactly a page's worth: the store must still say there is nothing after it.
    assert store.list_rollups(RollupQuery(limit=25)).next is None
    assert store.list_rollups(RollupQuery(limit=24)).next is not None
    assert len(list(walk_rollups(store, RollupQuery(limit=3)))) == 25


def _cube(hours: int, zones: int, source: str = "police") -> list[CubeRow]:
    return [CubeRow(f"h3:{z:02d}", NIGHT + h * HOUR, source, "theft", float(h + z + 1))
            for h in range(hours) for z in range(zones)]  # fmt: skip


def test_cube_is_never_cut_without_a_cursor(store: Any) -> None:
    assert store.record_import("police", "a" * 64, "f.csv", {}, _cube(5, 5), 1.0)
    pages = _chain(lambda after: store.query_cube(CubeQuery(limit=10, after=after)), 10)
    assert [len(p.rows) for p in pages] == [10, 10, 5]
    keys = [(r["hour"], r["zone"]) for p in pages for r in p.rows]
    assert keys == sorted({(NIGHT + h * HOUR, f"h3:{z:02d}") for h in range(5) for z in range(5)})
    assert store.query_cube(CubeQuery(limit=25)).next is None
    # Filters and the cursor together: zones by prefix, a range of hours.
    ranged = CubeQuery(zone_prefix="h3:", start=NIGHT + HOUR, end=NIGHT + 4 * HOUR, limit=4)
    assert len(list(walk_cube(store, ranged))) == 15


def _sums(rows: list[CubeRow], level: str) -> dict[tuple[int, str, str, str], float]:
    out: dict[tuple[int, str, str, str], float] = defaultdict(float)
    for r in rows:
        out[(UTC.start(r.hour, level), r.zone, r.source, r.category)] += r.n  # type: ignore[arg-type]
    return dict(out)


def _levels(store: Any, level: str, limit: int = 7) -> dict[tuple[int, str, str, str], float]:
    rows = walk_cube(store, CubeQuery(level=level, limit=limit))  # type: ignore[arg-type]
    return {(r["hour"], r["zone"], r["source"], r["category"]): r["n"] for r in rows}


def test_cube_levels_follow_imports_and_replacements(store: Any) -> None:
    first = _cube(30, 3)
    store.record_import("police", "a" * 64, "a.csv", {}, first, 1.0)
    second = _cube(4, 2)  # the same keys again: an import adds to them
    store.record_import("police", "b" * 64, "b.csv", {}, second, 2.0)
    assert not store.record_import("police", "b" * 64, "b.csv", {}, second, 3.0)  # seen: nothing added
    cameras = _cube(30, 2, source="camera")
    store.replace_cube(cameras)
    replaced = [CubeRow(r.zone, r.hour, r.source, r.category, r.n * 3) for r in cameras[:20]]
    store.replace_cube(replaced)  # recomputed hours replace the earlier count, not add to it
    hourly = [*first, *second, *replaced, *cameras[20:]]
    for level in ("day", "week", "month"):
        expected = _sums(hourly, level)
        assert len({k[0] for k in expected}) >= 2  # the night crosses each boundary
        got = _levels(store, level)
        assert got.keys() == expected.keys()
        for key, n in expected.items():
            assert abs(got[key] - n) < 1e-9, (level, key)
    week = store.query_cube(CubeQuery(level="week", zone_prefix="h3:", limit=1))
    assert week.rows[0]["span_h"] == 168
    assert week.next is not None


def test_cube_levels_backfill_matches_the_upserts(store: Any) -> None:
    """Migration 12 fills the levels from an older hub's cube: the same sums as kept at each upsert."""
    store.record_import("police", "a" * 64, "a.csv", {}, _cube(30, 3), 1.0)
    store.replace_cube(_cube(24 * 40, 1, source="camera"))  # 40 days: two months of weeks
    kept = {level: _levels(store, level, limit=1000) for level in ("day", "week", "month")}
    month_of = SQLITE_MONTH_OF if store.backend == "sqlite" else POSTGRES_MONTH_OF
    with store._tx() as cur:
        cur.execute("DELETE FROM cube_levels")
        for statement in backfill_sql(month_of):
            cur.execute(statement)
    assert {level: _levels(store, level, limit=1000) for level in kept} == kept


def test_sqlite_migration_12_fills_levels_from_an_older_cube(tmp_path: Any) -> None:
    from hub.storage.sqlite import MIGRATIONS, SQLiteStore

    path = tmp_path / "hub.sqlite"
    old = SQLiteStore(path, migrations=[m for m in MIGRATIONS if m[0] < 12])
    rows = _cube(24 * 40, 2)
    with old._tx() as cur:  # the cube as an older hub wrote it, with no levels
        cur.executemany("INSERT INTO cube (zone, hour, source, category, n) VALUES (?,?,?,?,?)",
                        [(r.zone, r.hour, r.source, r.category, r.n) for r in rows])  # fmt: skip
    old.close()
    upgraded = SQLiteStore(path)
    assert _levels(upgraded, "month", limit=1000) == _sums(rows, "month")
    assert _levels(upgraded, "week", limit=1000) == _sums(rows, "week")


def test_rollup_maintenance_runs_on_a_live_store(store: Any) -> None:
    store.add_events(_alerts(3), 1.0)
    store.maintain_rollups()  # VACUUM outside a transaction on PostgreSQL; PRAGMA optimize on SQLite
    assert len(store.list_rollups(RollupQuery()).rows) == 3


def test_anomalies_are_never_cut_without_a_cursor(store: Any) -> None:
    rows: list[dict[str, Any]] = [
        {"zone": f"h3:{i % 5:02d}", "hour": NIGHT + (i // 5) * HOUR, "source": "police", "category": "theft",
         "observed": 9.0, "expected": 1.0, "p": round(0.001 * (i % 3), 3)}
        for i in range(25)
    ]  # fmt: skip
    assert store.add_anomalies(rows, 1.0) == 25
    pages = _chain(lambda after: store.list_anomalies(None, None, 10, after), 10)
    assert [len(p.rows) for p in pages] == [10, 10, 5]
    got = [(r["hour"], r["p"], r["zone"]) for p in pages for r in p.rows]
    assert got == sorted(((r["hour"], r["p"], r["zone"]) for r in rows), key=lambda k: (-k[0], k[1], k[2]))
    assert len(list(walk_anomalies(store, NIGHT + HOUR, NIGHT + 3 * HOUR, page=3))) == 10


@pytest.mark.postgres
def test_purge_job_vacuums_the_rollups(pg_store: Any) -> None:
    """The hub's periodic job vacuums the roll-ups itself: no reliance on the server's autovacuum."""
    from hub.retention import PurgeJob

    pg_store.add_events(_alerts(3), 1.0)
    with pg_store._lock:
        before = pg_store._db.execute(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'rollups' AND schemaname = %s",
            (pg_store.schema,),
        ).fetchone()[0]
    PurgeJob(pg_store, Retention(), every_s=3600, lease_s=30).run_once()
    with pg_store._lock:
        after = pg_store._db.execute(
            "SELECT s.vacuum_count, c.reloptions FROM pg_stat_user_tables s"
            " JOIN pg_class c ON s.relid = c.oid WHERE s.relname = 'rollups' AND s.schemaname = %s",
            (pg_store.schema,),
        ).fetchone()
    assert after[0] == before + 1
    assert "fillfactor=70" in after[1]  # migration 12: room on each page for HOT updates
