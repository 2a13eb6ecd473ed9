"""The compact event store (issue 24): lossless, idempotent under concurrent writers, migrated from
one row per event, and small (bytes per event, measured)."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.event_mix import city_hour, city_windows
from hub.storage import EventQuery, Retention, RollupQuery, SQLiteStore, walk_rollups
from hub.storage.segments import (
    Item,
    compact,
    expand,
    hot_part,
    hour_of,
    pack_segment,
    part_of,
    stream_key,
    unpack_part,
    unpack_segment,
)
from tests.conftest import PG_DSN, need_service, postgres_available
from tests.test_wire import WINDOW, event
from vigie import wire

LABELS = st.sampled_from(["person", "car", "bus", "bicycle", "dog"])
SLUG = st.from_regex(r"[a-z0-9][a-z0-9-]{0,6}", fullmatch=True)
ZONE = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,6}", fullmatch=True)
MODEL = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,8}@[0-9A-Za-z.+-]{1,5}", fullmatch=True)
FLOATS = st.floats(min_value=0, max_value=10_000, allow_nan=False) | st.integers(0, 10_000).map(
    lambda n: n / 100
)


@st.composite
def windows(draw: st.DrawFn, choices: tuple[int, ...] = (10, 60, 300)) -> tuple[int, int]:
    window_s = draw(st.sampled_from(choices))
    start = WINDOW + draw(st.integers(0, 2000)) * 10
    return start - start % window_s, window_s


@st.composite
def count_maps(draw: st.DrawFn, k: int) -> dict[str, int | str]:
    labels = draw(st.lists(LABELS, unique=True, max_size=4))
    return {lb: draw(st.just(f"<{k}") | st.integers(k, 10_000) | st.just(0)) for lb in labels}


@st.composite
def zone_counts(draw: st.DrawFn) -> wire.ZoneCountEvent:
    ws, window_s = draw(windows())
    k = draw(st.integers(1, 9))
    counts = draw(count_maps(k))
    published = [lb for lb, v in counts.items() if isinstance(v, int)]
    mean = {lb: draw(FLOATS) for lb in published if draw(st.booleans())}
    v = draw(st.sampled_from([1, 2]))
    sd = {lb: draw(FLOATS) for lb in mean if v == 2 and draw(st.booleans())}
    return wire.ZoneCountEvent(
        v=v, site=draw(SLUG), device=draw(SLUG), zone=draw(ZONE), id=wire.new_event_id(ws), window_start=ws,
        window_s=window_s, frames=draw(st.integers(0, 1_000_000)), counts=counts, mean_counts=mean,
        sd_counts=sd, k=k, model=draw(MODEL),
        noise_epsilon=draw(st.none() | st.floats(min_value=0.01, max_value=100)),
    )  # fmt: skip


@st.composite
def line_counts(draw: st.DrawFn) -> wire.LineCountEvent:
    ws, window_s = draw(windows())
    k = draw(st.integers(1, 9))
    return wire.LineCountEvent(
        site=draw(SLUG), device=draw(SLUG), line=draw(ZONE), id=wire.new_event_id(ws), window_start=ws,
        window_s=window_s, forward=draw(count_maps(k)), backward=draw(count_maps(k)), k=k, model=draw(MODEL),
    )  # fmt: skip


@st.composite
def alerts(draw: st.DrawFn) -> wire.Alert:
    ts, _ = draw(windows((10,)))
    place = draw(ZONE)
    on_line = draw(st.booleans())
    return wire.Alert(
        site=draw(SLUG), device=draw(SLUG), id=wire.new_event_id(ts), ts=ts,
        rule=draw(st.sampled_from(["crowd_density", "intrusion", "wrong_way", "person_down"])),
        zone=None if on_line else place, line=place if on_line else None,
        value=draw(st.floats(min_value=0, max_value=1e6)),
        threshold=draw(st.floats(min_value=0, max_value=1e6)),
        model=draw(MODEL),
    )  # fmt: skip


@st.composite
def measurements(draw: st.DrawFn) -> wire.Measurement:
    ws, window_s = draw(windows())
    quantity = draw(st.sampled_from(sorted(wire.UNITS)))
    names = sorted(wire.STATS.get(quantity, frozenset({"mean", "min", "max"})))
    stats = {n: draw(st.floats(min_value=-100, max_value=10_000)) for n in names if draw(st.booleans())}
    return wire.Measurement(
        site=draw(SLUG), device=draw(SLUG), sensor=draw(ZONE), quantity=quantity, unit=wire.UNITS[quantity],
        id=wire.new_event_id(ws), window_start=ws, window_s=window_s,
        samples=draw(st.integers(1, 10_000_000)),
        stats=stats,
    )  # fmt: skip


EVENTS = st.one_of(zone_counts(), line_counts(), alerts(), measurements())
RECEIVED = st.floats(min_value=1_600_000_000, max_value=1_900_000_000).map(lambda t: round(t, 3))


@given(st.lists(EVENTS, min_size=1, max_size=30), RECEIVED)
@settings(max_examples=300, deadline=None)
def test_a_segment_gives_back_every_event_as_it_was(events: list[wire.Event], received_at: float) -> None:
    """Pure: pack the events of each (stream, hour), unpack, expand: the same wire models."""
    groups: dict[Any, list[wire.Event]] = {}
    for e in events:
        start = e.ts if isinstance(e, wire.Alert) else e.window_start
        groups.setdefault((stream_key(e), hour_of(start)), []).append(e)
    for (key, hour), group in groups.items():
        items = [
            Item(
                e.id,
                e.ts if isinstance(e, wire.Alert) else e.window_start,
                received_at,
                compact(e.model_dump()),
            )
            for e in group
        ]
        for e, item in zip(group, items, strict=True):  # the ingest's fast encoders say the same
            assert part_of(e) == item.part
            assert unpack_part(hot_part(e)) == item.part
        back = unpack_segment(pack_segment(items, hour), hour)
        assert {i.received_at for i in back} == {received_at}
        by_id = {e.id: e for e in group}
        for item in back:
            model = type(by_id[item.id])
            assert model.model_validate(expand(key, item.id, item.window_start, item.part)) == by_id[item.id]


@given(st.lists(EVENTS, min_size=1, max_size=20, unique_by=lambda e: e.id), st.booleans())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_store_gives_back_every_event_kind_losslessly(
    tmp_path: Path, events: list[wire.Event], packed: bool
) -> None:
    """Through the store: hot rows, or segments after compaction, list back as the same models."""
    store = SQLiteStore(tmp_path / f"{uuid.uuid4().hex}.sqlite")
    try:
        assert store.add_events(events, 1_800_000_000.5) == len(events)
        if packed:
            assert store.compact(2_000_000_000) == len(events)
        rows, _ = store.list_events(EventQuery(limit=1000))
        assert len(rows) == len(events)
        by_id = {e.id: e for e in events}
        for row in rows:
            body = {k: v for k, v in row.items() if k != "received_at"}
            assert type(by_id[row["id"]]).model_validate(body) == by_id[row["id"]]
            assert row["received_at"] == 1_800_000_000.5
    finally:
        store.close()


def test_late_events_of_a_packed_hour_are_deduplicated_and_packed_again(store: Any) -> None:
    first = [
        event(zone="quai", id=wire.new_event_id(WINDOW + 10 * i), window_start=WINDOW + 10 * i)
        for i in range(5)
    ]
    late = event(zone="quai", id=wire.new_event_id(WINDOW + 60), window_start=WINDOW + 60)
    assert store.add_events(first, 1.0) == 5
    assert store.compact(WINDOW + 86_400) == 5
    assert store.add_events(first, 2.0) == 0  # redelivered after packing: nothing new
    assert store.add_events([late, *first], 3.0) == 1
    assert store.compact(WINDOW + 86_400) == 1  # the late one joins its hour's segment
    assert sorted(store.event_ids()) == sorted(e.id for e in [*first, late])
    assert store.count_events() == 6
    (windows_row,) = store.list_rollups(RollupQuery(metric="windows")).rows
    assert windows_row["total"] == 6  # roll-ups counted each event once
    # A bulk group (straight to a segment) of the same hour skips what is stored, hot or packed.
    more = [event(zone="quai", id=wire.new_event_id(WINDOW + 100 + 10 * i),
                  window_start=WINDOW + 100 + 10 * i)
            for i in range(20)]  # fmt: skip
    store.add_events(more[:3], 4.0)  # hot
    assert store.add_events([*first, *more], 5.0) == 17
    assert len(store.event_ids()) == len(set(store.event_ids())) == 26
    (windows_row,) = store.list_rollups(RollupQuery(metric="windows")).rows
    assert windows_row["total"] == 26


@pytest.fixture
def pg_pair() -> Iterator[tuple[Any, Any]]:
    """Two PostgreSQL stores on one schema: two ingest workers."""
    need_service(postgres_available(), f"PostgreSQL ({PG_DSN})")
    from hub.storage.postgres import PostgresStore

    schema = f"t_{uuid.uuid4().hex[:12]}"
    a, b = PostgresStore(PG_DSN, schema=schema), PostgresStore(PG_DSN, schema=schema)
    try:
        yield a, b
    finally:
        a.drop_schema()
        a.close()
        b.close()


@pytest.mark.postgres
def test_concurrent_writers_store_each_event_once_on_postgres(pg_pair: tuple[Any, Any]) -> None:
    """Two stores (two ingest workers) write overlapping batches from two threads, live and bulk,
    while a third thread packs closed hours: every event once, roll-ups counted once."""
    a, b = pg_pair
    start = WINDOW - WINDOW % 3600
    live = list(city_windows(start, 2 * 3600, cameras=6, seed=3))  # two hours, time-major
    bulk = list(city_hour(start + 2 * 3600, cameras=6, seed=4))  # a third, device-major
    everything = live + bulk
    batches_a = [everything[i : i + 300] for i in range(0, len(everything), 300)]
    batches_b = [everything[i : i + 700] for i in range(150, len(everything), 700)]  # overlapping
    errors: list[BaseException] = []
    done = threading.Event()

    def write(store: Any, batches: list[list[wire.Event]]) -> None:
        try:
            for batch in batches:
                store.add_events(batch, 1.0)
        except BaseException as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)

    def pack() -> None:
        try:
            while not done.is_set():
                a.compact(start + 3 * 3600 + 1, grace_s=0)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=write, args=(a, batches_a)),
        threading.Thread(target=write, args=(b, batches_b)),
    ]
    packer = threading.Thread(target=pack)
    for t in [*threads, packer]:
        t.start()
    for t in threads:
        t.join()
    done.set()
    packer.join()
    assert not errors, errors
    ids = a.event_ids()
    assert len(ids) == len(set(ids)) == len(everything)  # 0 lost, 0 duplicated
    windows_total = sum(r["total"] for r in walk_rollups(a, RollupQuery(metric="windows", limit=100_000)))
    zone_events = sum(1 for e in everything if isinstance(e, wire.ZoneCountEvent | wire.LineCountEvent))
    assert windows_total == zone_events
    a.compact(start + 10 * 3600)
    assert sorted(b.event_ids()) == sorted(e.id for e in everything)


@pytest.mark.postgres
def test_a_new_writer_does_not_wait_on_readers_of_an_existing_month(pg_pair: tuple[Any, Any]) -> None:
    """A process that has not yet seen a month's partition, created by another, writes a bulk hour of
    it while a third transaction reads that partition. Before, the newcomer re-ran the partition's
    ALTER (an ACCESS EXCLUSIVE lock) and waited on every reader: with two bulk writers, a deadlock."""
    import psycopg

    a, b = pg_pair
    start = WINDOW - WINDOW % 3600
    a.add_events(list(city_hour(start, cameras=4, seed=5)), 1.0)  # creates the month's partition
    with psycopg.connect(PG_DSN) as reader:
        reader.execute(f"SET search_path TO {a.schema}")
        reader.execute("SELECT count(*) FROM event_segments")  # its transaction holds the month
        done: list[int] = []
        writer = threading.Thread(
            target=lambda: done.append(b.add_events(list(city_hour(start + 3600, cameras=4, seed=6)), 1.0)),
            daemon=True,
        )
        writer.start()
        writer.join(timeout=20)
        assert done, "the second writer waited on a reader of an existing partition"
        assert done[0] > 0
        reader.rollback()


def _old_rows(store: Any, events: list[wire.Event], received_at: float) -> None:
    """Rows as a hub at schema 10 wrote them (one per event, a JSON body)."""
    from hub.storage.events import index_columns

    sql = (
        "INSERT INTO events (id, site, device, kind, place, window_start, window_s, body, received_at)"
        " VALUES (?,?,?,?,?,?,?,?,?)"
    )
    with store._tx() as cur:
        if store.backend == "postgres":
            cur.execute(
                "CREATE TABLE events_y2023m11 PARTITION OF events FOR VALUES FROM (0) TO (4102444800)"
            )
        cur.executemany(
            store._sql(sql), [(*index_columns(e), e.model_dump_json(), received_at) for e in events]
        )


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_migration_11_converts_the_stored_events(backend: str, tmp_path: Path) -> None:
    events: list[wire.Event] = list(
        itertools.islice(city_windows(WINDOW - WINDOW % 3600, 3 * 3600, cameras=3), 2000)
    )
    events.append(wire.Alert(site="s", device="d", id=wire.new_event_id(WINDOW), rule="intrusion",
                             line="gate",
                             ts=WINDOW, value=4.0, threshold=3.0, model="m@1"))  # fmt: skip
    if backend == "sqlite":
        from hub.storage.sqlite import MIGRATIONS

        path = tmp_path / "hub.sqlite"
        old = SQLiteStore(path, migrations=MIGRATIONS[:10])
        _old_rows(old, events, 1_800_000_000.25)
        old.close()
        store: Any = SQLiteStore(path)
        latest = MIGRATIONS[-1][0]
    else:
        need_service(postgres_available(), f"PostgreSQL ({PG_DSN})")
        from hub.storage.postgres import MIGRATIONS as PG_MIGRATIONS
        from hub.storage.postgres import PostgresStore

        schema = f"t_{uuid.uuid4().hex[:12]}"
        old = PostgresStore(PG_DSN, schema=schema, migrations=PG_MIGRATIONS[:10])
        _old_rows(old, events, 1_800_000_000.25)
        old.close()
        store = PostgresStore(PG_DSN, schema=schema)
        latest = PG_MIGRATIONS[-1][0]
    try:
        assert store.schema_version() == latest >= 11
        assert store.count_events() == len(events)
        rows, _ = store.list_events(EventQuery(limit=1000, device="cam-0001"))
        expected = sorted((e for e in events if e.device == "cam-0001"), key=lambda e: (e.window_start, e.id))
        assert [r["id"] for r in rows] == [e.id for e in reversed(expected)]
        by_id = {e.id: e for e in events}
        listed = (
            store.list_events(EventQuery(limit=1000))[0]
            + store.list_events(EventQuery(limit=1000, site="s"))[0]
        )
        for row in listed:
            assert row["received_at"] == 1_800_000_000.25
            body = {k: v for k, v in row.items() if k != "received_at"}
            assert type(by_id[row["id"]]).model_validate(body) == by_id[row["id"]]
        assert store.add_events(events[:50], 2.0) == 0  # converted events are known: no duplicate
    finally:
        if backend == "postgres":
            store.drop_schema()
        store.close()


def test_a_city_mix_takes_at_most_100_bytes_per_event(store: Any) -> None:
    """Issue 24: 200,000 events of the city's mix (zone counts every 10 s, line counts, sound
    levels, alerts), packed: ≤ 100 bytes per event, with every index (SQLite: dbstat; PostgreSQL:
    pg_total_relation_size of each table, TOAST included). 92 cameras for 3 hours: each stream's
    hour is as full as in the 1,600-camera city."""
    start = 1_790_000_000 - 1_790_000_000 % 3600
    events = list(itertools.chain.from_iterable(city_hour(start + h * 3600, cameras=92) for h in range(3)))
    assert len(events) >= 200_000
    for i in range(0, len(events), 20_000):  # a bulk load: large groups packed at once
        assert store.add_events(events[i : i + 20_000], float(start + 4 * 3600)) == len(
            events[i : i + 20_000]
        )
    store.compact(start + 10 * 3600)  # the groups split across batches merged
    assert store.count_events() == len(events)
    per_event = store.event_bytes() / len(events)
    print(f"{store.backend}: {per_event:.1f} bytes per event, {len(events)} events")
    assert per_event <= 100


def test_listing_filters_and_bounds(store: Any) -> None:
    """Filters select streams; since/until bound window starts; any 64-bit cursor is answered."""
    a = [
        event(zone="quai", id=wire.new_event_id(WINDOW + 3600 * h), window_start=WINDOW + 3600 * h)
        for h in range(4)
    ]
    b = [event(device="cam-02", id=wire.new_event_id(WINDOW + 3600 * h), window_start=WINDOW + 3600 * h)
         for h in range(4)]  # fmt: skip
    store.add_events(a[:2] + b[:2], 1.0)
    store.compact(WINDOW + 3 * 3600)  # hours 0 and 1 packed
    store.add_events(a[2:] + b[2:], 2.0)
    ids = [r["id"] for r in store.list_events(EventQuery(device="cam-01"))[0]]
    assert ids == [e.id for e in reversed(a)]
    window = EventQuery(since=WINDOW + 3600, until=WINDOW + 3 * 3600)
    assert {r["id"] for r in store.list_events(window)[0]} == {e.id for e in a[1:3] + b[1:3]}
    assert store.list_events(EventQuery(device="nobody"))[0] == []
    top = store.list_events(EventQuery(cursor=(2**63 - 1, "ffffffff-ffff-7fff-bfff-ffffffffffff")))[0]
    assert len(top) == 8
    assert store.list_events(EventQuery(cursor=(0, "00000000-0000-7000-8000-000000000000")))[0] == []


def test_packed_events_are_purged_by_whole_hours(store: Any) -> None:
    """A packed hour goes once it has wholly passed the cut-off; hot rows go event by event."""
    hour = WINDOW - WINDOW % 3600
    early = event(zone="quai", id=wire.new_event_id(hour - 3600), window_start=hour - 3600)
    packed = [event(zone="quai", id=wire.new_event_id(hour + s), window_start=hour + s) for s in (0, 1800)]
    store.add_events([early, *packed], 1.0)
    assert store.compact(hour + 3 * 3600) == 3
    hot = event(zone="rue", id=wire.new_event_id(hour), window_start=hour)
    store.add_events([hot], 2.0)
    cutoff = hour + 900  # inside the packed hour, after the hot event
    removed = store.purge(Retention(events_days=1, rollups_days=None, quarantine_days=None), cutoff + 86_400)
    assert removed["events"] == 2  # the earlier hour's segment, and the hot event before the cut-off
    assert sorted(r["id"] for r in store.list_events(EventQuery())[0]) == sorted(e.id for e in packed)
    later = store.purge(
        Retention(events_days=1, rollups_days=None, quarantine_days=None), hour + 3600 + 86_400
    )
    assert later["events"] == 2  # the hour has wholly passed: its segment goes
    assert store.count_events() == 0
