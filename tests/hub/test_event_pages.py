"""Pages of events (``eventpages.py``, issue 24): the same answers as a plain sort of every event,
over hot rows, packed hours and late events of packed hours; and a page decodes only the segments
it needs."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from bench.event_mix import city_windows
from hub.storage import EventQuery
from hub.storage.segments import HOUR, stream_key, unpack_rows
from vigie import wire

START = 1_790_002_800 - 1_790_002_800 % HOUR
HOURS = 4


def _city(store: Any) -> list[wire.Event]:
    """Two cameras for four hours: the first two hours packed, then late events of hours 0 and 1
    (hot rows beside their segments), the last two hours hot."""
    events = list(city_windows(START, HOURS * HOUR, cameras=2, seed=3))
    early = [e for e in events if _ws(e) < START + 2 * HOUR]
    late = [e for e in events if _ws(e) >= START + 2 * HOUR]
    held_back = early[::50]  # arrive after their hour was packed
    back_ids = {e.id for e in held_back}
    first = [e for e in early if e.id not in back_ids]
    for i in range(0, len(first), 2000):
        store.add_events(first[i : i + 2000], float(START + 3 * HOUR))
    store.compact(START + 4 * HOUR)
    store.add_events(held_back, float(START + 5 * HOUR))
    for i in range(0, len(late), 40):  # a few windows at a time: hot rows, as live batches are
        store.add_events(late[i : i + 40], float(START + 5 * HOUR))
    return events


def _ws(e: wire.Event) -> int:
    return e.ts if isinstance(e, wire.Alert) else e.window_start


def _expected(events: list[wire.Event], q: EventQuery) -> list[str]:
    key = {"site": 0, "device": 1, "kind": 2, "place": 3}
    chosen = [
        e
        for e in events
        if all(getattr(q, f) is None or stream_key(e)[i] == getattr(q, f) for f, i in key.items())
        and (q.since is None or _ws(e) >= q.since)
        and (q.until is None or _ws(e) < q.until)
    ]
    return [e.id for e in sorted(chosen, key=lambda e: (_ws(e), e.id), reverse=True)]


def _walk(store: Any, q: EventQuery, pages: int) -> list[str]:
    ids: list[str] = []
    for _ in range(pages):
        rows, cursor = store.list_events(q)
        ids += [r["id"] for r in rows]
        if cursor is None:
            break
        q = replace(q, cursor=cursor)
    return ids


def test_pages_match_a_plain_sort_of_every_event(store: Any) -> None:
    events = _city(store)
    rng = random.Random(24)
    sample = events[::37]
    for _ in range(30):
        e = rng.choice(sample)
        kind, place = stream_key(e)[2:]
        filters: dict[str, Any] = rng.choice([{}, {"device": e.device}, {"device": e.device, "place": place},
                              {"site": e.site, "kind": kind}, {"place": place}])  # fmt: skip
        since = rng.choice([None, START + rng.randrange(HOURS * HOUR)])
        until = rng.choice([None, START + rng.randrange(HOURS * HOUR) + 1, START + HOUR, START + 2 * HOUR])
        limit = rng.choice([1, 7, 100, 1000])
        q = EventQuery(**filters, since=since, until=until, limit=limit)
        pages = 4 if limit < 100 else 100
        expected = _expected(events, q)
        got = _walk(store, q, pages)
        assert got == expected[: len(got)], q
        assert len(got) == min(len(expected), pages * limit), q


def test_a_page_decodes_only_the_segments_it_needs(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A device's zone over the whole span, 100 rows: the newest packed hour of that one stream
    holds them (hot rows of later hours do not count towards a packed hour's)."""
    events = _city(store)
    decoded: list[int] = []

    def spy(blob: bytes, hour: int) -> Any:
        decoded.append(hour)
        return unpack_rows(blob, hour)

    monkeypatch.setattr("hub.storage.eventpages.unpack_rows", spy)
    q = EventQuery(device="cam-0001", kind="zone_count", place="north", until=START + 2 * HOUR, limit=100)
    rows, cursor = store.list_events(q)
    assert [r["id"] for r in rows] == _expected(events, q)[:100]
    assert cursor is not None
    assert decoded == [START + HOUR]  # one stream's segment of one hour
    decoded.clear()
    q = EventQuery(
        device="cam-0001", kind="zone_count", place="north", since=START, until=START + 2 * HOUR, limit=1000
    )
    rows, _ = store.list_events(q)  # 720 events: both packed hours, nothing else
    assert [r["id"] for r in rows] == _expected(events, q)
    assert sorted(decoded) == [START, START + HOUR]
    decoded.clear()
    rows, _ = store.list_events(
        EventQuery(device="cam-0001", kind="zone_count", place="north", since=START + 2 * HOUR)
    )
    assert len(rows) == 100
    assert decoded == []  # hot hours only: no segment read
    rows, _ = store.list_events(EventQuery(device="cam-0001", kind="zone_count", place="north", limit=1000))
    assert [r["id"] for r in rows] == _expected(events, EventQuery(device="cam-0001", kind="zone_count",
                                                                   place="north"))[:1000]  # fmt: skip
    assert decoded == [START + HOUR]  # 720 hot rows, and the newest packed hour makes the page
