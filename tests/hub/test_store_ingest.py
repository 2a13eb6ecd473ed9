"""The storage contract, run against SQLite and PostgreSQL alike; and the pure ingest classifier."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from hub.ingest import classify
from hub.storage import Campaign, EventQuery, QuarantineRecord, Retention, RollupQuery
from hub.storage.rollup import rollup_rows
from tests.test_wire import WINDOW, event
from vigie import wire

T = "vigie/v1/vieux-port/cam-01/event"
DAY = 86_400


def test_insert_is_idempotent_on_event_id(store: Any) -> None:
    e1, e2 = event(), event(zone="rue")
    assert store.add_events([e1, e2], 1.0) == 2
    assert store.add_events([e1], 2.0) == 0  # QoS 1 redelivery
    assert store.add_events([e1, e2, event()], 3.0) == 1
    assert store.add_events([e1, e1], 4.0) == 0  # the same message twice in one batch
    rows, _ = store.list_events(EventQuery())
    assert len(rows) == 3
    assert len({r["id"] for r in rows}) == 3
    assert store.count_events() == 3


def test_rollups_count_each_event_once(store: Any) -> None:
    e1 = event(counts={"person": 4, "bus": 1}, mean_counts={})
    e2 = event(
        counts={"person": 6}, mean_counts={}, id=wire.new_event_id(WINDOW + 10), window_start=WINDOW + 10
    )
    store.add_events([e1, e2], 1.0)
    store.add_events([e1, e2], 2.0)  # redelivered: the roll-ups must not move
    rows = {r["metric"]: r for r in store.list_rollups(RollupQuery(place="quai")).rows}
    assert rows["peak:person"]["n"] == 2
    assert rows["peak:person"]["total"] == 10
    assert rows["peak:person"]["max"] == 6
    assert rows["peak:person"]["mean"] == 5
    assert rows["windows"]["total"] == 2
    assert rows["peak:bus"]["n"] == 1
    assert rows["peak:person"]["hour"] == WINDOW - WINDOW % 3600
    peaks = store.list_rollups(RollupQuery(metric="peak:*")).rows
    assert {r["metric"] for r in peaks} == {"peak:person", "peak:bus"}


def test_rollup_rows_for_every_kind() -> None:
    line = wire.LineCountEvent(
        site="s", device="d", id=wire.new_event_id(WINDOW), line="door", window_start=WINDOW, window_s=10,
        forward={"person": 7}, backward={"person": "<2"}, k=2, model="m@1",
    )  # fmt: skip
    alert = wire.Alert(
        site="s", device="d", id=wire.new_event_id(WINDOW), rule="intrusion", zone="quai", ts=WINDOW,
        value=4.0, threshold=3.0, model="m@1",
    )  # fmt: skip
    metrics = {(r.place, r.metric): r.total for r in rollup_rows([line, alert])}
    assert metrics[("door", "forward:person")] == 7
    assert metrics[("door", "suppressed:person")] == 1
    assert metrics[("quai", "alert:intrusion")] == 1


def test_cursor_pagination_walks_every_event_once(store: Any) -> None:
    # Three hours of windows, several zones per window: ties on the window start are broken by id.
    starts = [WINDOW + 3600 * h + 10 * w for h in range(3) for w in range(3)]
    events = [
        event(zone=f"z{i}", id=wire.new_event_id(ws), window_start=ws) for ws in starts for i in range(3)
    ]
    store.add_events(events[:12], 1.0)
    store.compact(WINDOW + 30 * DAY)  # the first hours packed into segments, the rest stays hot
    store.add_events(events[12:], 2.0)
    for limit in (1, 4, 10, 100):
        seen: list[tuple[int, str]] = []
        cursor = None
        while True:
            rows, cursor = store.list_events(EventQuery(limit=limit, cursor=cursor))
            seen += [(r["window_start"], r["id"]) for r in rows]
            if cursor is None:
                break
        assert seen == sorted(((e.window_start, e.id) for e in events), reverse=True)  # newest first, once


def test_rollups_page_after_a_key_in_their_order(store: Any) -> None:
    """Issue 20: a page of roll-ups resumes after the last row's key, in either backend's order."""
    store.add_events(
        [event(zone=z, id=wire.new_event_id(WINDOW + h * 3600), window_start=WINDOW + h * 3600)
         for h in range(4) for z in ("quai", "parvis", "abri")],
        1.0,
    )  # fmt: skip
    whole = store.list_rollups(RollupQuery(limit=10_000))
    assert len(whole.rows) > 20
    assert whole.next is None
    pages: list[dict[str, Any]] = []
    after = None
    while True:
        page = store.list_rollups(RollupQuery(limit=7, after=after))
        pages += page.rows
        if page.next is None:
            break
        last = page.rows[-1]
        assert page.next == (last["hour"], last["site"], last["device"], last["place"], last["metric"])
        after = page.next
    assert pages == whole.rows


def test_filters(store: Any) -> None:
    store.add_events(
        [event(device="cam-01"), event(device="cam-02"), event(device="cam-02", zone="rue")], 1.0
    )
    rows, _ = store.list_events(EventQuery(device="cam-02", place="rue"))
    assert [(r["device"], r["zone"]) for r in rows] == [("cam-02", "rue")]
    assert store.list_events(EventQuery(since=WINDOW + 10))[0] == []
    assert len(store.list_events(EventQuery(kind="zone_count"))[0]) == 3


def test_devices_heartbeat_status_and_quarantine(store: Any) -> None:
    store.add_events([event()], 1.0)
    store.record_status(wire.Status(site="vieux-port", device="cam-01", ts=WINDOW + 5, state="online"), 2.0)
    # A stale retained "offline" arriving later must not override the newer "online".
    store.record_status(wire.Status(site="vieux-port", device="cam-01", ts=WINDOW, state="offline"), 3.0)
    big = QuarantineRecord(T, "vieux-port", "cam-01", "<payload>", "exceeds", b"x" * 10_000, 1.0)
    store.quarantine([big, big])
    (device,) = store.list_devices()
    assert device["status"] == "online"
    assert device["events"] == 1
    assert device["quarantined"] == 2
    rows = store.list_quarantine()
    assert len(rows) == 2
    assert rows[0]["size"] == 10_000
    assert len(bytes.fromhex(rows[0]["payload_hex"])) == 1024
    assert store.quarantine_count() == 2


def test_retention_purges_exactly_what_it_should(store: Any) -> None:
    now = float(WINDOW + 200 * DAY)
    old = event(zone="old", id=wire.new_event_id(WINDOW), window_start=WINDOW)  # 200 days old
    edge_ts = WINDOW + 110 * DAY  # 90 days old: on the keep side of a 100-day policy
    kept = event(zone="kept", id=wire.new_event_id(edge_ts), window_start=edge_ts)
    fresh_ts = WINDOW + 199 * DAY
    fresh = event(zone="fresh", id=wire.new_event_id(fresh_ts), window_start=fresh_ts)
    store.add_events([old, kept, fresh], now)
    store.quarantine([QuarantineRecord(T, None, None, "<topic>", "bad", b"x", now - 40 * DAY),
                      QuarantineRecord(T, None, None, "<topic>", "bad", b"x", now - 1 * DAY)])  # fmt: skip
    removed = store.purge(Retention(events_days=100, rollups_days=150, quarantine_days=30), now)
    assert removed == {"events": 1, "rollups": 4, "quarantine": 1}  # old: windows, frames, 2 peaks
    assert sorted(r["zone"] for r in store.list_events(EventQuery())[0]) == ["fresh", "kept"]
    assert {r["place"] for r in store.list_rollups(RollupQuery()).rows} == {"kept", "fresh"}
    assert store.quarantine_count() == 1
    (log,) = store.list_purges()
    assert log["events"] == 1
    assert log["policy"]["events_days"] == 100
    # Purging again removes nothing more.
    assert store.purge(Retention(events_days=100, rollups_days=150, quarantine_days=30), now) == {
        "events": 0, "rollups": 0, "quarantine": 0,
    }  # fmt: skip


def _campaign(campaign_id: str, created_at: float) -> Campaign:
    return {
        "id": campaign_id, "target": "models/m-1.1.0.tar", "version": "1.1.0", "devices": ["s/a", "s/b"],
        "waves": [["s/b"], ["s/a"]], "fractions": [0.5, 1.0], "policy": {"timeout_s": 60}, "state": "running",
        "wave": 0, "wave_started": None, "commanded": [], "outcomes": {}, "log": [], "created_at": created_at,
    }  # fmt: skip


def test_campaigns_are_rows_changed_under_a_lock(store: Any) -> None:
    assert store.add_campaign(_campaign("c-2", 2.0), 2.0)
    assert store.add_campaign(_campaign("c-1", 1.0), 1.0)
    assert not store.add_campaign({**_campaign("c-1", 3.0), "target": "other"}, 3.0)  # ids are unique
    assert [c["id"] for c in store.list_campaigns()] == ["c-1", "c-2"]  # oldest first
    assert store.get_campaign("c-1")["target"] == "models/m-1.1.0.tar"
    assert store.get_campaign("nope") is None
    assert store.modify_campaign("nope", lambda c: {"state": "paused"}, 4.0) is None
    seen: list[Campaign] = []
    unchanged = store.modify_campaign("c-1", lambda c: seen.append(c), 4.0)  # None: nothing to write
    assert unchanged == seen[0] == store.get_campaign("c-1")

    def pause(c: Campaign) -> dict[str, Any]:
        return {"state": "paused", "log": [*c["log"], {"at": 5.0, "event": "paused", "why": "test"}]}

    written = store.modify_campaign("c-1", pause, 5.0)
    assert written["state"] == "paused"
    assert written["waves"] == [["s/b"], ["s/a"]]  # fields not returned are kept
    assert store.get_campaign("c-1") == written
    assert store.get_campaign("c-2")["state"] == "running"

    def fail(c: Campaign) -> dict[str, Any]:
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError, match="refused"):
        store.modify_campaign("c-1", fail, 6.0)
    assert store.get_campaign("c-1") == written  # rolled back, and the store still works


def test_schema_is_migrated_to_the_latest_version(store: Any) -> None:
    from hub.storage.sqlite import MIGRATIONS

    assert store.schema_version() == MIGRATIONS[-1][0]


def test_sqlite_migrates_an_older_database(tmp_path: Any) -> None:
    from hub.storage.sqlite import MIGRATIONS, SQLiteStore

    path = tmp_path / "hub.sqlite"
    v1 = SQLiteStore(path, migrations=MIGRATIONS[:1])
    assert v1.schema_version() == 1
    v1.close()
    upgraded = SQLiteStore(path)
    assert upgraded.schema_version() == MIGRATIONS[-1][0]
    assert upgraded.add_events([event()], 1.0) == 1
    assert upgraded.list_rollups(RollupQuery()).rows


@pytest.mark.postgres
def test_postgres_partitions_by_month_and_drops_old_months(pg_store: Any) -> None:
    nov = 1_793_491_200  # 2026-11-01T00:00:00Z
    e_oct = event(id=wire.new_event_id(nov - DAY + 60), window_start=nov - DAY + 60)
    e_nov = event(id=wire.new_event_id(nov + 4 * DAY + 60), window_start=nov + 4 * DAY + 60)
    pg_store.add_events([e_oct, e_nov], 1.0)
    assert pg_store.compact(nov + 6 * DAY) == 2  # both hours closed: packed into segments
    assert pg_store.partitions() == ["event_segments_y2026m10", "event_segments_y2026m11"]
    # Keep 3 days at Nov 6: the cut-off (Nov 3) is past October's end, so October goes whole.
    removed = pg_store.purge(Retention(events_days=3, rollups_days=None, quarantine_days=None), nov + 6 * DAY)
    assert removed["events"] == 1
    assert pg_store.partitions() == ["event_segments_y2026m11"]
    assert [r["id"] for r in pg_store.list_events(EventQuery())[0]] == [e_nov.id]


def test_classify_accepts_good_messages() -> None:
    e = event()
    assert classify(T, wire.encode(e), 0.0) == e


def test_classify_quarantines_with_field_and_reason() -> None:
    cases = {
        b"\xc1": ("<payload>", "not valid msgpack"),
        wire.encode(event())[:-4]: ("<payload>", "truncated"),
        msgpack.packb({"v": 9}): ("v", "unknown schema version"),
        b"\x00" * 10_000: ("<payload>", "exceeds"),
    }
    for payload, (field, words) in cases.items():
        result = classify(T, payload, 0.0)
        assert isinstance(result, QuarantineRecord)
        assert result.field == field
        assert words in result.reason
        assert (result.site, result.device) == ("vieux-port", "cam-01")


def test_classify_refuses_a_body_naming_another_device() -> None:
    result = classify(T, wire.encode(event(device="cam-99")), 0.0)
    assert isinstance(result, QuarantineRecord)
    assert result.field == "device"
    assert "cam-99" in result.reason


def test_classify_refuses_bad_topics() -> None:
    result = classify("somewhere/else", wire.encode(event()), 0.0)
    assert isinstance(result, QuarantineRecord)
    assert result.field == "<topic>"
    assert result.device is None
