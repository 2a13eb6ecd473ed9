"""The compaction job (issue 24): recent events are packed every few minutes, so that only a few
minutes of the city sit in hot rows (~400 B an event) instead of one or two hours; events stay
lossless, once each, and live batches never decode a segment to find duplicates."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import hub.storage.events as events_module
from bench.event_mix import city_windows
from hub.compact_job import JOB, CompactJob
from hub.storage import EventQuery, RollupQuery, walk_rollups
from tests.conftest import PG_DSN, need_service, postgres_available
from tests.test_wire import WINDOW, event
from vigie import wire

HOUR = 3600
START = WINDOW - WINDOW % HOUR
EVERY, GRACE = 300, 300
DELAY = 15  # seconds from a window's start to its arrival at the hub (10-s windows, batching)


def _ticks(start: int, seconds: int, cameras: int, seed: int = 1) -> Iterator[tuple[int, list[wire.Event]]]:
    """The city's events window by window (time-major, as a live hub receives them)."""
    for ws, group in itertools.groupby(
        city_windows(start, seconds, cameras=cameras, seed=seed),
        key=lambda e: e.ts if isinstance(e, wire.Alert) else e.window_start,
    ):
        yield ws, list(group)


def _hot(store: Any) -> tuple[int, int | None]:
    n, oldest = store._query("SELECT count(*), min(window_start) FROM events_hot")[0]
    return int(n), None if oldest is None else int(oldest)


def _segments(store: Any, hour: int) -> tuple[int, int]:
    """(segments, streams) of one hour."""
    n, streams = store._query(
        "SELECT count(*), count(DISTINCT stream) FROM event_segments WHERE hour = ?", (hour,)
    )[0]
    return int(n), int(streams)


def test_an_hour_of_live_ingest_keeps_at_most_grace_plus_period_hot(store: Any) -> None:
    """Issue 24: with the job at its period, the hot rows hold at most ``grace + every`` seconds of
    events at any time (the old hourly compaction left one to two hours of them hot)."""
    job = CompactJob(store, EVERY, GRACE, lease_s=30)
    sent: list[wire.Event] = []
    next_run = START + EVERY
    most_hot_s = 0
    for ws, batch in _ticks(START, 80 * 60, cameras=3):
        now = ws + DELAY
        if now >= next_run:
            job.run_once(float(now))
            next_run += EVERY
            _, oldest = _hot(store)
            assert oldest is None or oldest >= now - GRACE  # what started before is packed
        assert store.add_events(batch, float(now)) == len(batch)
        sent += batch
        _, oldest = _hot(store)
        assert oldest is not None
        most_hot_s = max(most_hot_s, ws - oldest + 10)
    assert most_hot_s <= GRACE + EVERY + DELAY + 10
    # The hour in progress holds a few segments per stream; the closed hour one per stream.
    segs, streams = _segments(store, START)
    assert segs == streams > 0
    segs, streams = _segments(store, START + HOUR)
    assert segs >= streams > 0
    # Lossless and once each, across hot rows and many segments per stream and hour.
    assert sorted(store.event_ids()) == sorted(e.id for e in sent)
    assert store.count_events() == len(sent)
    rows, _ = store.list_events(EventQuery(limit=100_000))
    by_id = {e.id: e for e in sent}
    assert len(rows) == len(sent)
    for row in rows:
        body = {k: v for k, v in row.items() if k != "received_at"}
        assert type(by_id[row["id"]]).model_validate(body) == by_id[row["id"]]
    windows_total = sum(r["total"] for r in walk_rollups(store, RollupQuery(metric="windows", limit=10_000)))
    assert windows_total == sum(1 for e in sent if isinstance(e, wire.ZoneCountEvent | wire.LineCountEvent))


def test_redelivered_and_late_events_of_packed_windows_are_stored_once(store: Any) -> None:
    first = [
        event(zone="quai", id=wire.new_event_id(START + 10 * i), window_start=START + 10 * i)
        for i in range(6)
    ]
    assert store.add_events(first, float(START + 70)) == 6
    assert store.compact_recent(START + 400, grace_s=GRACE) == 6  # the hour in progress, packed
    assert _hot(store)[0] == 0
    assert store.add_events(first, float(START + 410)) == 0  # redelivered after packing: nothing new
    late = event(id=wire.new_event_id(START + 90), window_start=START + 90)
    live = event(id=wire.new_event_id(START + 400), window_start=START + 400)
    assert store.add_events([late, live, *first], float(START + 420)) == 2  # late and live: hot
    assert store.compact_recent(START + 800, grace_s=GRACE) == 2  # one more segment of the hour
    assert _segments(store, START) == (2, 1)
    assert store.add_events([late, live], float(START + 810)) == 0
    # A bulk group (straight to a segment) of the same hour skips what is packed, and follows its seg.
    more = [
        event(id=wire.new_event_id(START + 500 + 10 * i), window_start=START + 500 + 10 * i)
        for i in range(20)
    ]
    assert store.add_events([*first, *more], float(START + 900)) == 20
    assert _segments(store, START) == (3, 1)
    assert store.compact_recent(START + HOUR + GRACE, grace_s=GRACE) == 0  # the hour closed: merged
    assert _segments(store, START) == (1, 1)
    ids = store.event_ids()
    assert sorted(ids) == sorted(e.id for e in [*first, late, live, *more])
    (windows_row,) = store.list_rollups(RollupQuery(metric="windows")).rows
    assert windows_row["total"] == 28  # roll-ups counted each event once


def test_live_batches_decode_no_segment(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the hour in progress holds segments, a live batch (newer windows) looks in none of them:
    their ``hi`` is older than the batch (migration 16); a late event looks in its stream's only."""
    ticks = list(_ticks(START, 20 * 60, cameras=3))
    for ws, batch in ticks[:60]:
        store.add_events(batch, float(ws + DELAY))
    assert store.compact_recent(float(ticks[59][0] + DELAY), grace_s=GRACE) > 0
    decoded: list[int] = []
    real = events_module.unpack_segment

    def counting(blob: bytes, hour: int) -> Any:
        decoded.append(hour)
        return real(blob, hour)

    monkeypatch.setattr(events_module, "unpack_segment", counting)
    for ws, batch in ticks[60:]:
        assert store.add_events(batch, float(ws + DELAY)) == len(batch)
    assert decoded == []
    late = ticks[0][1][0]  # packed already: found in its stream's segment, stored once
    assert store.add_events([late], float(ticks[-1][0])) == 0
    assert decoded == [START]


def test_the_job_packs_what_is_past_its_grace(store: Any) -> None:
    job = CompactJob(store, EVERY, GRACE, lease_s=30, holder="a")
    assert job.job.name == JOB  # one lease for all the hub's processes
    store.add_events([event(window_start=START, id=wire.new_event_id(START))], float(START + 20))
    assert job.run_once(float(START + 20)) == 0  # within its grace: stays hot
    assert job.run_once(float(START + GRACE + 1)) == 1
    with pytest.raises(ValueError, match="compact_grace_s"):
        CompactJob(store, EVERY, -1, lease_s=30)


@pytest.mark.postgres
def test_concurrent_writers_and_the_job_store_each_event_once_on_postgres() -> None:
    """Two ingest workers write overlapping live batches while the job packs the hour in progress
    again and again, its clock running with the data: every event once, roll-ups counted once."""
    need_service(postgres_available(), f"PostgreSQL ({PG_DSN})")
    from hub.storage.postgres import PostgresStore

    schema = f"t_{uuid.uuid4().hex[:12]}"
    a, b = PostgresStore(PG_DSN, schema=schema), PostgresStore(PG_DSN, schema=schema)
    try:
        everything = list(city_windows(START, 2 * HOUR, cameras=4, seed=5))
        batches_a = [everything[i : i + 200] for i in range(0, len(everything), 200)]
        batches_b = [everything[i : i + 500] for i in range(100, len(everything), 500)]
        clock = [START]
        errors: list[BaseException] = []
        done = threading.Event()

        def write(store: Any, batches: list[list[wire.Event]]) -> None:
            try:
                for batch in batches:
                    newest = max(e.ts if isinstance(e, wire.Alert) else e.window_start for e in batch)
                    clock[0] = max(clock[0], newest)
                    store.add_events(batch, float(newest))
            except BaseException as exc:  # reported below: a thread's failure must fail the test
                errors.append(exc)

        def pack() -> None:
            try:
                while not done.is_set():
                    a.compact_recent(float(clock[0]), grace_s=60)
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=write, args=(a, batches_a)),
            threading.Thread(target=write, args=(b, batches_b)),
            threading.Thread(target=pack),
        ]
        for t in threads:
            t.start()
        for t in threads[:2]:
            t.join()
        done.set()
        threads[2].join()
        assert not errors, errors
        ids = a.event_ids()
        assert len(ids) == len(set(ids)) == len(everything)  # 0 lost, 0 duplicated
        rollups = walk_rollups(a, RollupQuery(metric="windows", limit=100_000))
        zone_events = sum(1 for e in everything if isinstance(e, wire.ZoneCountEvent | wire.LineCountEvent))
        assert sum(r["total"] for r in rollups) == zone_events
        a.compact_recent(float(START + 3 * HOUR))
        assert _hot(a)[0] == 0
        assert sorted(b.event_ids()) == sorted(e.id for e in everything)
    finally:
        a.drop_schema()
        a.close()
        b.close()


def test_hot_parts_and_segments_are_deflated_against_a_dictionary_and_old_ones_still_read() -> None:
    """Issue 24: a hot part is ~200 bytes of JSON, deflated against a preset dictionary; segments
    too. What older hubs wrote (plain JSON parts, segments without a dictionary) reads the same."""
    import zlib

    import msgpack

    from hub.storage.segments import Item, hot_part, pack_segment, part_of, unpack_part, unpack_segment

    e = event(window_start=START, id=wire.new_event_id(START))
    packed = hot_part(e)
    plain = e.model_dump_json(exclude={"site", "device", "kind", "id", "window_start"}).encode()
    assert len(packed) < len(plain) / 2
    assert unpack_part(packed) == unpack_part(plain) == part_of(e)
    with pytest.raises(ValueError, match="hot event part of format 9"):
        unpack_part(b"\x09" + packed[1:])
    items = [Item(e.id, START, START + 12.5, part_of(e))]
    blob = pack_segment(items, START)
    old = zlib.compress(zlib.decompressobj(zdict=_seg_dict()).decompress(blob), 9)
    assert unpack_segment(blob, START) == unpack_segment(old, START) == items
    assert len(blob) < len(old)
    other = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, b"another dictionary")
    foreign = other.compress(msgpack.packb({"f": 1})) + other.flush()
    with pytest.raises(ValueError, match="dictionary"):
        unpack_segment(foreign, START)


def _seg_dict() -> bytes:
    from hub.storage import segments

    return segments._SEG_DICT
