"""Events (hot rows and packed hourly segments), devices' traffic, quarantine and ingest workers' status.

Writes are idempotent on the event id (the hot rows' key, and a look-up in the hour's segments),
and roll-ups are incremented only for the events really inserted, in the same transaction: a
redelivered message changes nothing, twice over.

Pages of events (the read path) are in ``eventpages.py``. Longer than 400 lines because the
events' write path (de-duplication across hot rows and segments, the hour locks) needs its
private helpers together; the devices', quarantine's and ingest status's methods (the last ~120
lines) are the next to move into a module of their own.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from hub.storage.base import QUARANTINE_KEEP_BYTES, EventQuery, QuarantineRecord
from hub.storage.rollup import RollupRow, rollup_rows
from hub.storage.segments import (
    HOUR,
    Item,
    StreamKey,
    hot_part,
    hour_of,
    pack_segment,
    part_of,
    start_of,
    stream_key,
    unpack_segment,
)
from hub.storage.sqlbase import INSERT_CHUNK, SqlBase
from vigie import wire

__all__ = ["SEGMENT_MIN", "EventSql", "clock_skew_s", "index_columns"]

#: A group of one stream and one hour this large is packed at once (a bulk load, a backlog);
#: smaller ones (a live batch holds one event per stream) wait in ``events_hot`` for ``compact``.
SEGMENT_MIN = 16


def index_columns(e: wire.Event) -> tuple[str, str, str, str, str, int, int]:
    """(id, site, device, kind, place, window start, window length) of any event kind."""
    if isinstance(e, wire.Alert):
        return (e.id, e.site, e.device, e.kind, e.zone or e.line or "", e.ts, wire.ALERT_GRANULARITY_S)
    if isinstance(e, wire.Measurement):
        return (e.id, e.site, e.device, e.kind, e.sensor, e.window_start, e.window_s)
    place = e.zone if isinstance(e, wire.ZoneCountEvent) else e.line
    return (e.id, e.site, e.device, e.kind, place, e.window_start, e.window_s)


def clock_skew_s(device_ts: int, received_at: float) -> int:
    """Device clock minus hub clock, to the heartbeat's granularity (0 within it; pure)."""
    skew = device_ts - received_at
    # Heartbeat times are rounded down to HEARTBEAT_GRANULARITY_S and take a moment to arrive.
    if -wire.HEARTBEAT_GRANULARITY_S - 5 <= skew <= 5:
        return 0
    return round(skew)


class EventSql(SqlBase):
    """The ingest's writes and the API's reads of what devices sent.

    Events are stored compactly (``segments.py``): a live batch holds about one event per stream,
    so its events go to ``events_hot``, one small row each, whose primary key on the id is what
    makes concurrent workers idempotent; :meth:`compact` later packs each closed hour of each
    stream into one ``event_segments`` row. A large group of one stream and one hour (a bulk load,
    a device's backlog) is packed straight away. Segments and hot rows of an hour are written by
    one transaction at a time where that matters (``_lock_hours``: PostgreSQL's advisory locks;
    SQLite has one writer anyway), so that an id is looked up in both before it is written.
    """

    def __init__(self) -> None:
        super().__init__()
        self._streams: dict[StreamKey, int] = {}

    def _ensure_partitions(self, hours: set[int]) -> None:
        """Segment partitions for these hours exist (PostgreSQL: made in a transaction of its own)."""

    def _prepare_partitions(self, cur: Any, hours: set[int]) -> None:
        """PostgreSQL creates the monthly partitions of ``event_segments`` that these hours need."""

    def _lock_hours(self, cur: Any, hours: Sequence[int], exclusive: set[int]) -> None:
        """PostgreSQL: advisory locks on the hours written (shared for hot rows, exclusive to write
        segments), taken in sorted order so that no two writers deadlock."""

    def _id_in(self, event_id: str) -> Any:
        return bytes.fromhex(event_id.replace("-", ""))  # a canonical UUID (the wire model checks)

    def _id_out(self, value: Any) -> str:
        return str(uuid.UUID(bytes=bytes(value)))

    def add_events(self, events: Sequence[wire.Event], received_at: float) -> int:
        if not events:
            return 0
        by_id = {e.id: e for e in events}
        groups: dict[tuple[StreamKey, int], list[wire.Event]] = {}
        for e in by_id.values():
            groups.setdefault((stream_key(e), hour_of(start_of(e))), []).append(e)
        direct = {g for g, group in groups.items() if len(group) >= SEGMENT_MIN}
        # Encoded before the transaction: the database's locks are not held during Python work.
        parts = {
            e.id: (self._id_in(e.id), start_of(e), hot_part(e))
            for g, group in groups.items()
            if g not in direct
            for e in group
        }
        self._ensure_partitions({h for _, h in direct})
        with self._tx() as cur:
            streams = self._stream_ids(cur, {k for k, _ in groups})
            hours = sorted({h for _, h in groups})
            oldest = {  # each (stream, hour)'s oldest window in this batch
                (streams[k], h): min(start_of(e) for e in group) for (k, h), group in groups.items()
            }
            with self._pipeline():  # PostgreSQL: the locks and the look-up in one round trip
                self._lock_hours(cur, hours, {h for _, h in direct})
                newest = self._hours_newest_segment(
                    cur, {h: min(ws for (_, hh), ws in oldest.items() if hh == h) for h in hours}
                )
            # Segments are looked in only where one may hold a window of this batch (a late event, a
            # redelivery), or where a group is packed (its ``seg`` must follow theirs): live
            # events are newer than every segment of their hour, which the compaction job packs
            # up to a few minutes ago (hub/compact_job.py).
            packed_now = {(streams[k], h) for k, h in direct}
            look = {
                pair: ws
                for pair, ws in oldest.items()
                if pair[1] in newest and (ws <= newest[pair[1]] or pair in packed_now)
            }
            stored, next_seg = self._segment_ids(cur, look)
            hot = [
                (*parts[e.id][:1], streams[key], parts[e.id][1], received_at, parts[e.id][2])
                for (key, hour), group in groups.items()
                if (key, hour) not in direct
                for e in group
                if e.id not in stored
            ]
            raw_ids = {raw: event_id for event_id, (raw, _, _) in parts.items()}
            inserted: list[str] = []
            for i in range(0, len(hot), INSERT_CHUNK):
                inserted += [raw_ids[raw] for raw in self._insert_hot(cur, hot[i : i + INSERT_CHUNK])]
            packed = self._write_direct(cur, groups, direct, streams, stored, next_seg, received_at)
            new = [by_id[i] for i in inserted] + packed
            per_device: dict[tuple[str, str], int] = {}
            for e in events:  # every delivery counts as traffic, even a duplicate
                per_device[(e.site, e.device)] = per_device.get((e.site, e.device), 0) + 1
            with self._pipeline():  # no result needed: one round trip for both on PostgreSQL
                self._add_rollups(cur, new)
                self._touch_many(cur, per_device, received_at)
        self._streams.update(streams)  # committed: safe to remember
        return len(new)

    def _write_direct(
        self,
        cur: Any,
        groups: dict[tuple[StreamKey, int], list[wire.Event]],
        direct: set[tuple[StreamKey, int]],
        streams: dict[StreamKey, int],
        stored: set[str],
        next_seg: dict[tuple[int, int], int],
        received_at: float,
    ) -> list[wire.Event]:
        """Pack the large groups into segments of their own; returns the events really written."""
        if not direct:
            return []
        candidates = [e for g in direct for e in groups[g] if e.id not in stored]
        in_hot = self._hot_ids(cur, {h for _, h in direct}, [e.id for e in candidates])
        self._prepare_partitions(cur, {h for _, h in direct})
        written: list[wire.Event] = []
        rows: list[tuple[Any, ...]] = []
        for key, hour in sorted(direct, key=lambda g: (streams[g[0]], g[1])):
            fresh = [e for e in groups[(key, hour)] if e.id not in stored and e.id not in in_hot]
            if not fresh:
                continue
            items = [Item(e.id, start_of(e), received_at, part_of(e)) for e in fresh]
            sid = streams[key]
            hi = max(i.window_start for i in items)
            seg = next_seg.get((sid, hour), 0)
            rows.append((sid, hour, seg, len(items), hi, pack_segment(items, hour)))
            written += fresh
        self._insert_segments(cur, rows)
        return written

    def _stream_ids(self, cur: Any, keys: set[StreamKey]) -> dict[StreamKey, int]:
        """The dictionary ids of these streams, adding those not seen before."""
        known = {k: self._streams[k] for k in keys if k in self._streams}
        missing = sorted(
            (k for k in keys if k not in known), key=lambda k: (k.site, k.device, k.kind, k.place)
        )
        if missing:
            cur.executemany(
                self._sql(
                    "INSERT INTO event_streams (site, device, kind, place) VALUES (?,?,?,?)"
                    " ON CONFLICT DO NOTHING"
                ),
                [(k.site, k.device, k.kind, k.place) for k in missing],
            )
            cur.execute("SELECT stream, site, device, kind, place FROM event_streams")
            every = {StreamKey(r[1], r[2], r[3], r[4]): int(r[0]) for r in cur.fetchall()}
            known.update({k: every[k] for k in missing})
        return known

    def _segment_ids(
        self, cur: Any, pairs: dict[tuple[int, int], int]
    ) -> tuple[set[str], dict[tuple[int, int], int]]:
        """Ids packed already in the segments of these (stream, hour)s that reach the pair's oldest
        window (``hi``: only those can hold one of its ids, which carry their window start), and
        each pair's next ``seg``."""
        todo = sorted(pairs.items())
        stored: set[str] = set()
        next_seg: dict[tuple[int, int], int] = {}
        for i in range(0, len(todo), INSERT_CHUNK):
            chunk = todo[i : i + INSERT_CHUNK]
            values = ",".join(["(?,?,?)"] * len(chunk))
            cur.execute(
                self._sql(
                    "SELECT s.stream, s.hour, s.seg, CASE WHEN s.hi >= v.column3 THEN s.body END"
                    f" FROM event_segments s JOIN (VALUES {values}) AS v"
                    " ON s.stream = v.column1 AND s.hour = v.column2"
                ),
                [v for (sid, hour), ws in chunk for v in (sid, hour, ws)],
            )
            for sid, hour, seg, body in cur.fetchall():
                if body is not None:
                    stored.update(item.id for item in unpack_segment(bytes(body), int(hour)))
                key = (int(sid), int(hour))
                next_seg[key] = max(next_seg.get(key, 0), int(seg) + 1)
        return stored, next_seg

    def _hours_newest_segment(self, cur: Any, oldest: dict[int, int]) -> dict[int, int]:
        """Of these hours (each with the batch's oldest window in it), those holding a segment, with
        their segments' newest window (``hi``); live hours have none newer than the batch: one
        probe each in ``event_segments_hour`` (hour, hi)."""
        if not oldest:
            return {}
        cur.execute(
            self._sql(
                "SELECT column1, (SELECT hi FROM event_segments WHERE hour = column1"
                f" ORDER BY hi DESC LIMIT 1) FROM (VALUES {','.join(['(?)'] * len(oldest))}) AS h"
            ),
            sorted(oldest),
        )
        return {int(r[0]): int(r[1]) for r in cur.fetchall() if r[1] is not None}

    def _hot_ids(self, cur: Any, hours: set[int], ids: list[str]) -> set[str]:
        """Which of these ids are hot rows already (looked up only in hours that have hot rows)."""
        busy = False
        for h in sorted(hours):
            cur.execute(
                self._sql("SELECT 1 FROM events_hot WHERE window_start >= ? AND window_start < ? LIMIT 1"),
                (h, h + HOUR),
            )
            busy = busy or cur.fetchone() is not None
        if not busy:
            return set()
        found: set[str] = set()
        for i in range(0, len(ids), INSERT_CHUNK):
            chunk = ids[i : i + INSERT_CHUNK]
            cur.execute(
                self._sql(f"SELECT id FROM events_hot WHERE id IN ({','.join(['?'] * len(chunk))})"),
                [self._id_in(x) for x in chunk],
            )
            found.update(self._id_out(r[0]) for r in cur.fetchall())
        return found

    def _insert_hot(self, cur: Any, rows: list[tuple[Any, ...]]) -> list[Any]:
        """Insert hot rows, skipping ids already stored; returns the ids really inserted, as stored."""
        values = ",".join(["(?,?,?,?,?)"] * len(rows))
        cur.execute(
            "INSERT INTO events_hot (id, stream, window_start, received_at, part)"
            f" VALUES {values} ON CONFLICT DO NOTHING RETURNING id",
            [v for row in rows for v in row],
        )
        return [r[0] for r in cur.fetchall()]

    def _insert_segments(self, cur: Any, rows: list[tuple[Any, ...]]) -> None:
        """Rows of (stream, hour, seg, n, hi: the newest window start, body)."""
        if rows:
            cur.executemany(
                self._sql("INSERT INTO event_segments (stream, hour, seg, n, hi, body) VALUES (?,?,?,?,?,?)"),
                rows,
            )

    def _add_rollups(self, cur: Any, events: Sequence[wire.Event]) -> None:
        rows = sorted(rollup_rows(events), key=lambda r: (r.hour, r.site, r.device, r.place, r.metric))
        self._upsert_rollups(cur, rows)

    def _upsert_rollups(self, cur: Any, rows: list[RollupRow]) -> None:
        g = self._greatest
        # Keys are unique within a batch (rollup_rows aggregates), so one multi-row upsert per chunk:
        # one round trip instead of one per row, which is what PostgreSQL's throughput needs.
        for i in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[i : i + INSERT_CHUNK]
            values = ",".join(["(?,?,?,?,?,?,?,?)"] * len(chunk))
            cur.execute(
                self._sql(
                    f"INSERT INTO rollups (hour, site, device, place, metric, n, total, max) VALUES {values}"
                    " ON CONFLICT (hour, site, device, place, metric) DO UPDATE SET"
                    " n = rollups.n + excluded.n, total = rollups.total + excluded.total,"
                    f" max = {g}(rollups.max, excluded.max)"
                ),
                [
                    v
                    for r in chunk
                    for v in (r.hour, r.site, r.device, r.place, r.metric, r.n, r.total, r.max)
                ],
            )

    def _touch_many(self, cur: Any, counts: dict[tuple[str, str], int], now: float) -> None:
        """Upsert many devices' traffic counters in one statement (sorted: no deadlocks between workers)."""
        items = sorted(counts.items())
        for i in range(0, len(items), INSERT_CHUNK):
            chunk = items[i : i + INSERT_CHUNK]
            values = ",".join(["(?,?,?,?,?,0)"] * len(chunk))
            cur.execute(
                self._sql(
                    "INSERT INTO devices (site, device, first_seen, last_seen, events, quarantined)"
                    f" VALUES {values}"
                    " ON CONFLICT (site, device) DO UPDATE SET"
                    f" last_seen = {self._greatest}(devices.last_seen, excluded.last_seen),"
                    " events = devices.events + excluded.events"
                ),
                [v for (site, device), n in chunk for v in (site, device, now, now, n)],
            )

    def _touch(
        self, cur: Any, site: str, device: str, now: float, *, events: int = 0, quarantined: int = 0
    ) -> None:
        cur.execute(
            self._sql(
                "INSERT INTO devices (site, device, first_seen, last_seen, events, quarantined)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT (site, device) DO UPDATE SET"
                f" last_seen = {self._greatest}(devices.last_seen, excluded.last_seen),"
                " events = devices.events + excluded.events,"
                " quarantined = devices.quarantined + excluded.quarantined"
            ),
            (site, device, now, now, events, quarantined),
        )

    def record_heartbeat(self, beat: wire.Heartbeat, received_at: float) -> None:
        with self._tx() as cur:
            self._touch(cur, beat.site, beat.device, received_at)
            # The device's clock against the hub's: a skewed clock shifts its event windows
            # (stored as sent, never dropped); operators see the offset in /v1/devices.
            body = {**beat.model_dump(mode="json"), "clock_skew_s": clock_skew_s(beat.ts, received_at)}
            cur.execute(
                self._sql("UPDATE devices SET heartbeat = ? WHERE site = ? AND device = ?"),
                (json.dumps(body), beat.site, beat.device),
            )

    def record_status(self, status: wire.Status, received_at: float) -> None:
        with self._tx() as cur:
            self._touch(cur, status.site, status.device, received_at)
            # Retained and last-will messages can arrive out of order: keep the newest.
            cur.execute(
                self._sql(
                    "UPDATE devices SET status = ?, status_ts = ? WHERE site = ? AND device = ?"
                    " AND (status_ts IS NULL OR status_ts <= ?)"
                ),
                (status.state, status.ts, status.site, status.device, status.ts),
            )

    def quarantine(self, records: Sequence[QuarantineRecord]) -> None:
        if not records:
            return
        with self._tx() as cur:
            cur.executemany(
                self._sql(
                    "INSERT INTO quarantine (received_at, topic, site, device, field, reason, size, payload)"
                    " VALUES (?,?,?,?,?,?,?,?)"
                ),
                [
                    (r.received_at, r.topic[:256], r.site, r.device, r.field[:128], r.reason[:512],
                     len(r.payload), r.payload[:QUARANTINE_KEEP_BYTES])
                    for r in records
                ],
            )  # fmt: skip
            for r in records:
                if r.site and r.device:
                    self._touch(cur, r.site, r.device, r.received_at, quarantined=1)

    def _stream_map(self, query: EventQuery | None = None) -> dict[int, StreamKey]:
        """Streams matching the query's site, device, kind and place (every stream without a query)."""
        where, args = self._where(
            []
            if query is None
            else [("site = ?", query.site), ("device = ?", query.device), ("kind = ?", query.kind),
                  ("place = ?", query.place)]
        )  # fmt: skip
        rows = self._query(f"SELECT stream, site, device, kind, place FROM event_streams{where}", args)
        return {int(r[0]): StreamKey(r[1], r[2], r[3], r[4]) for r in rows}

    def _in_streams(self, only: list[int] | None) -> tuple[str, list[int]]:
        if only is None:
            return "", []
        return f" AND stream IN ({','.join(['?'] * len(only))})", only

    def event_ids(self, site: str | None = None, device: str | None = None) -> list[str]:
        """Every stored event id, once per stored copy (tests count duplicates with it)."""
        streams = self._stream_map(EventQuery(site=site, device=device))
        if not streams:
            return []
        clause, args = self._in_streams(sorted(streams))
        ids = [
            self._id_out(r[0]) for r in self._query(f"SELECT id FROM events_hot WHERE 1 = 1{clause}", args)
        ]
        for hour, body in self._query(f"SELECT hour, body FROM event_segments WHERE 1 = 1{clause}", args):
            ids += [item.id for item in unpack_segment(bytes(body), int(hour))]
        return ids

    def event_bytes(self) -> int:
        """Bytes the stored events take, with their indexes (SQLite: ``dbstat``)."""
        rows = self._query(
            "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN (SELECT name FROM sqlite_master"
            " WHERE tbl_name IN ('event_streams', 'events_hot', 'event_segments'))"
        )
        return int(rows[0][0])

    def count_events(self) -> int:
        hot = self._query("SELECT count(*) FROM events_hot")[0][0]
        packed = self._query("SELECT coalesce(sum(n), 0) FROM event_segments")[0][0]
        return int(hot) + int(packed)

    def record_ingest_status(self, worker: str, connected: bool, stats: dict[str, Any], now: float) -> None:
        """Where each ingest process says how it is doing (read by /healthz in any process)."""
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO ingest_workers (worker, updated_at, connected, stats) VALUES (?,?,?,?)"
                    " ON CONFLICT (worker) DO UPDATE SET updated_at = excluded.updated_at,"
                    " connected = excluded.connected, stats = excluded.stats"
                ),
                (worker, now, connected, json.dumps(stats)),
            )

    def list_ingest_status(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT worker, updated_at, connected, stats FROM ingest_workers ORDER BY worker")
        return [
            {"worker": r[0], "updated_at": r[1], "connected": bool(r[2]), **json.loads(r[3])} for r in rows
        ]

    def list_devices(self) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT site, device, first_seen, last_seen, status, events, quarantined, heartbeat"
            " FROM devices ORDER BY site, device"
        )
        now = time.time()
        return [
            {"site": r[0], "device": r[1], "first_seen": r[2], "last_seen": r[3],
             "seconds_since_seen": round(now - r[3], 1), "status": r[4], "events": r[5], "quarantined": r[6],
             "heartbeat": json.loads(r[7]) if r[7] else None}
            for r in rows
        ]  # fmt: skip

    def list_quarantine(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT received_at, topic, site, device, field, reason, size, payload FROM quarantine"
            " ORDER BY seq DESC LIMIT ?",
            (limit,),
        )
        return [
            {"received_at": r[0], "topic": r[1], "site": r[2], "device": r[3], "field": r[4], "reason": r[5],
             "size": r[6], "payload_hex": bytes(r[7]).hex()}
            for r in rows
        ]  # fmt: skip

    def quarantine_count(self) -> int:
        return int(self._query("SELECT count(*) FROM quarantine")[0][0])
