"""Compaction: each closed hour of each stream packed into one segment, the hour in progress into
a few more (one per run of the compaction job); and migration 11, which packs the one-row-per-event
table of older hubs the same way (``segments.py`` is the encoding)."""

from __future__ import annotations

import json
from typing import Any

from hub.storage.events import EventSql
from hub.storage.segments import (
    HOUR,
    Item,
    StreamKey,
    compact,
    hour_of,
    pack_segment,
    unpack_part,
    unpack_segment,
)

__all__ = ["COMPACT_GRACE_S", "COMPACT_RECENT_GRACE_S", "COMPACT_STREAMS", "CompactionSql"]

#: An hour is packed once it ended this long ago (late events of a packed hour are packed again).
COMPACT_GRACE_S = 3600
#: The compaction job packs windows that started this long ago: longer than a window (10-60 s),
#: the agents' publishing delay and the ingest's batching, so that most events are in by then.
#: Shorter leaves fewer hot rows but more, smaller segments (measured in docs/performance.md).
COMPACT_RECENT_GRACE_S = 120
#: Streams packed per transaction: bounds the memory and the time an hour stays locked.
COMPACT_STREAMS = 256


class CompactionSql(EventSql):
    """``compact_recent`` (the compaction job), ``compact`` (the retention job runs it before each
    purge) and the events' migration 11."""

    def compact(self, now: float, grace_s: float = COMPACT_GRACE_S) -> int:
        """Pack each closed hour (ended ``grace_s`` before ``now``) of each stream into one segment.

        Returns the events packed. Runs from the retention job; safe next to the ingest workers.
        """
        packed = self._compact_closed(hour_of(int(now - grace_s)))
        self._after_compact()
        return packed

    def compact_recent(self, now: float, grace_s: float = COMPACT_RECENT_GRACE_S) -> int:
        """Pack every hot row whose window started ``grace_s`` before ``now`` or earlier.

        Hours closed by then are merged into one segment per stream (as :meth:`compact`); the hour
        in progress gets one more segment per stream with its windows packed since the last run
        (``seg`` counts them; ``hi`` is each one's newest window, so ingest knows that newer events
        need no look in them). A late event lands hot and is packed at the next run. Returns the
        events packed; run by the compaction job every few minutes (hub/compact_job.py).
        """
        cutoff = int(now - grace_s)
        open_hour = hour_of(cutoff)
        packed = self._compact_closed(open_hour)
        if cutoff > open_hour:
            streams = sorted(
                int(r[0])
                for r in self._query(
                    "SELECT DISTINCT stream FROM events_hot WHERE window_start >= ? AND window_start < ?",
                    (open_hour, cutoff),
                )
            )
            for i in range(0, len(streams), COMPACT_STREAMS):
                packed += self._pack_open(open_hour, cutoff, streams[i : i + COMPACT_STREAMS])
        self._after_compact()
        return packed

    def _compact_closed(self, cutoff: int) -> int:
        """Merge the hot rows and segments of each stream of each hour before ``cutoff`` (an hour)."""
        hours = {
            int(r[0]) * HOUR  # integer division in both dialects
            for r in self._query(
                "SELECT DISTINCT window_start / 3600 FROM events_hot WHERE window_start < ?",
                (cutoff,),
            )
        }
        hours |= {
            int(r[0])
            for r in self._query(
                "SELECT DISTINCT hour FROM event_segments WHERE seg > 0 AND hour < ?", (cutoff,)
            )
        }
        packed = 0
        for hour in sorted(hours):
            streams = sorted(
                {int(r[0]) for r in self._query(
                    "SELECT DISTINCT stream FROM events_hot WHERE window_start >= ? AND window_start < ?",
                    (hour, hour + HOUR))}
                | {int(r[0]) for r in self._query(
                    "SELECT DISTINCT stream FROM event_segments WHERE hour = ? AND seg > 0", (hour,))}
            )  # fmt: skip
            for i in range(0, len(streams), COMPACT_STREAMS):
                packed += self._compact_streams(hour, streams[i : i + COMPACT_STREAMS])
        return packed

    def _after_compact(self) -> None:
        """PostgreSQL vacuums the hot table it just emptied (whatever the server's autovacuum)."""

    def _pack_open(self, hour: int, cutoff: int, streams: list[int]) -> int:
        """Pack these streams' hot rows of ``hour`` before ``cutoff`` into one new segment each.

        No look in the hour's segments: an id is never both hot and packed (ingest looks in the
        segments before writing a hot row, and this deletes the rows it packs, under the hour's lock).
        """
        clause, args = self._in_streams(streams)
        span = [hour, cutoff, *args]
        with self._tx() as cur:
            self._lock_hours(cur, [hour], {hour})
            self._prepare_partitions(cur, {hour})
            cur.execute(
                self._sql(
                    "SELECT stream, id, window_start, received_at, part FROM events_hot"
                    f" WHERE window_start >= ? AND window_start < ?{clause}"
                ),
                span,
            )
            hot = cur.fetchall()
            if not hot:
                return 0
            items: dict[int, list[Item]] = {}
            for sid, raw_id, ws, ra, part in hot:
                items.setdefault(int(sid), []).append(
                    Item(self._id_out(raw_id), int(ws), float(ra), unpack_part(bytes(part)))
                )
            cur.execute(
                self._sql(
                    f"SELECT stream, max(seg) FROM event_segments WHERE hour = ?{clause} GROUP BY stream"
                ),
                [hour, *args],
            )
            next_seg = {int(sid): int(seg) + 1 for sid, seg in cur.fetchall()}
            cur.execute(
                self._sql(f"DELETE FROM events_hot WHERE window_start >= ? AND window_start < ?{clause}"),
                span,
            )
            rows = [
                (sid, hour, next_seg.get(sid, 0), len(group), max(i.window_start for i in group),
                 pack_segment(group, hour))
                for sid, group in sorted(items.items())
            ]  # fmt: skip
            self._insert_segments(cur, rows)
        return len(hot)

    def _compact_streams(self, hour: int, streams: list[int]) -> int:
        clause, args = self._in_streams(streams)
        self._ensure_partitions({hour})
        with self._tx() as cur:
            self._lock_hours(cur, [hour], {hour})
            items: dict[int, dict[str, Item]] = {s: {} for s in streams}
            cur.execute(
                self._sql(f"SELECT stream, body FROM event_segments WHERE hour = ?{clause} ORDER BY seg"),
                [hour, *args],
            )
            for sid, body in cur.fetchall():
                for item in unpack_segment(bytes(body), hour):
                    items[int(sid)].setdefault(item.id, item)
            cur.execute(
                self._sql(
                    "SELECT stream, id, window_start, received_at, part FROM events_hot"
                    f" WHERE window_start >= ? AND window_start < ?{clause}"
                ),
                [hour, hour + HOUR, *args],
            )
            hot = cur.fetchall()
            for sid, raw_id, ws, ra, part in hot:
                event_id = self._id_out(raw_id)
                items[int(sid)].setdefault(
                    event_id, Item(event_id, int(ws), float(ra), unpack_part(bytes(part)))
                )
            cur.execute(self._sql(f"DELETE FROM event_segments WHERE hour = ?{clause}"), [hour, *args])
            cur.execute(
                self._sql(f"DELETE FROM events_hot WHERE window_start >= ? AND window_start < ?{clause}"),
                [hour, hour + HOUR, *args],
            )
            rows = [
                (sid, hour, 0, len(group), max(i.window_start for i in group.values()),
                 pack_segment(list(group.values()), hour))
                for sid, group in sorted(items.items())
                if group
            ]  # fmt: skip
            self._insert_segments(cur, rows)
        return len(hot)

    def _convert_v10_events(self, cur: Any) -> None:
        """Migration 11: the one-row-per-event table of versions 1-10 becomes streams and segments."""
        reader = self._reader(cur)
        reader.execute(
            "SELECT id, site, device, kind, place, window_start, body, received_at FROM events"
            " ORDER BY site, device, kind, place, window_start"
        )
        streams: dict[StreamKey, int] = {}
        group: list[Item] = []
        group_key: tuple[StreamKey, int] | None = None

        def flush() -> None:
            if group_key is None or not group:
                return
            key, hour = group_key
            if key not in streams:
                cur.execute(
                    self._sql("INSERT INTO event_streams (site, device, kind, place) VALUES (?,?,?,?)"),
                    (key.site, key.device, key.kind, key.place),
                )
                cur.execute(
                    self._sql(
                        "SELECT stream FROM event_streams"
                        " WHERE site = ? AND device = ? AND kind = ? AND place = ?"
                    ),
                    (key.site, key.device, key.kind, key.place),
                )
                streams[key] = int(cur.fetchone()[0])
            self._prepare_partitions(cur, {hour})
            # No ``hi`` yet (migration 16 adds it, with a default that means "any window").
            cur.execute(
                self._sql("INSERT INTO event_segments (stream, hour, seg, n, body) VALUES (?,?,?,?,?)"),
                (streams[key], hour, 0, len(group), pack_segment(group, hour)),
            )

        while batch := reader.fetchmany(10_000):
            for event_id, site, device, kind, place, ws, body, received_at in batch:
                gk = (StreamKey(site, device, kind, place), hour_of(int(ws)))
                if gk != group_key:
                    flush()
                    group, group_key = [], gk
                group.append(Item(event_id, int(ws), float(received_at), compact(json.loads(body))))
        flush()
        reader.close()

    def _reader(self, cur: Any) -> Any:
        """A cursor that streams a large result (PostgreSQL: a server-side one)."""
        return self._db.cursor()
