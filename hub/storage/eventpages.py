"""Pages of stored events, newest first by (window start, id): hot rows and packed segments merged.

A page's cost follows the page, not the store (issue 24): every statement is an index look-up
bounded by stream and time (by time alone for an unfiltered page), and only the hours whose
segments can hold one of the page's rows are fetched and decoded. Per page, whatever its span:

1. the streams the filters select (the ``event_streams`` unique index; none for an unfiltered page);
2. the newest hot rows below the bound, per stream through ``events_hot_stream``;
3. how many events each hour's segments of those streams hold (``n``, newest hour first), until
   those hours (the ones wholly inside the bounds) and the hot rows from there on hold a page:
   an event of an older hour is older than all of them. Hours older than a full hot page's
   last row are not asked about. For a bounded range (up to a month) 2 and 3 share one round trip;
4. the segments of those hours only, decoded.

Per stream (``UNION ALL`` of one look-up each) rather than ``stream IN (...)``: the planner
cannot then walk a time index across every stream of the city, whatever its statistics say.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any

from hub.storage.base import EventQuery
from hub.storage.events import EventSql
from hub.storage.segments import HOUR, StreamKey, hour_of, time_field, unpack_part, unpack_rows

__all__ = ["EventPageSql"]

_FAR = 2**62  # beyond any window start, with room for an hour more within 64 bits
#: Above this many streams one ``IN`` list replaces the per-stream look-ups (a whole site's page).
_PER_STREAM_MAX = 64
#: Hours of segment counts asked for at once: a day first, then four times more each round.
_FIRST_SPAN = 24 * HOUR
#: A bounded range up to this long is counted in one statement, without looking for its newest hour.
_ONE_SHOT_SPAN = 31 * 24 * HOUR

#: One stream's segments of [lo, hi] by (stream, hour) row bounds, which only the primary key
#: (stream, hour, seg) can serve: never the hour index across every stream, whatever the statistics.
_RANGE = "stream = ? AND (stream, hour) >= (?, ?) AND (stream, hour) <= (?, ?)"

Row = tuple[int, str, float, int, dict[str, Any]]  # window start, id, received at, stream, part


class EventPageSql(EventSql):
    """``list_events``: the API's and the analysts' pages of raw events."""

    def __init__(self) -> None:
        super().__init__()
        # Streams are never deleted nor changed, so an id once read names the same stream forever.
        self._stream_keys: dict[int, StreamKey] = {}

    def list_events(self, query: EventQuery) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
        """Newest first by (window start, id); the cursor is that key of the page's last event."""
        filtered = any(v is not None for v in (query.site, query.device, query.kind, query.place))
        only: list[int] | None = None
        if filtered:
            streams = self._stream_map(query)
            if not streams:
                return [], None
            self._stream_keys.update(streams)
            only = sorted(streams)
        bound: tuple[int, str] | None = query.cursor
        if query.until is not None and (bound is None or query.until <= bound[0]):
            bound = (query.until, "")  # every id sorts after "": ws < until
        since = query.since
        if (bound is not None and bound[0] <= -_FAR) or (since is not None and since >= _FAR):
            return [], None  # nothing is stored that far out
        if bound is not None and bound[0] >= _FAR:
            bound = None  # beyond every window start: no bound
        if since is not None and since <= -_FAR:
            since = None
        want = query.limit + 1  # one row past the page says whether another follows
        hot = self._hot_page(bound, since, only, want)
        # The hour of the newest event the bound lets through (below ``until``, which is exclusive).
        top = _FAR if bound is None else hour_of(bound[0] - (0 if bound[1] else 1))
        floor = -_FAR if since is None else hour_of(since)
        if floor > -_FAR and top - floor <= _ONE_SHOT_SPAN:
            # A bounded range (an hour, a day of a device): its hot rows and its segments' counts
            # in one round trip, then the segments the page needs.
            hot_rows, counts = self._queries([hot, self._counts_sql(floor, top, only)])
            rows = self._hot_rows(hot_rows)
            floor = max(floor, self._edge(rows, want))
            hours = self._choose(counts, floor, since, bound, want, self._starts(rows, want))[0]
        else:
            rows = self._hot_rows(self._query(*hot))
            floor = max(floor, self._edge(rows, want))
            hours = self._page_hours(top, floor, since, bound, only, want, self._starts(rows, want))
        rows += self._segment_rows(hours, bound, since, only)
        rows.sort(key=lambda r: (r[0], r[1]), reverse=True)
        found = rows[:want]
        page = found[: query.limit]
        keys = self._keys_of({r[3] for r in page})
        data = []
        for ws, event_id, received_at, sid, part in page:
            key = keys[sid]
            # expand(), inlined: one dict per row (a page is up to thousands of rows).
            data.append({"site": key.site, "device": key.device, "kind": key.kind, "id": event_id,
                         time_field(key.kind): ws, **part, "received_at": received_at})  # fmt: skip
        more = len(found) > query.limit and page
        return data, ((page[-1][0], page[-1][1]) if more else None)

    def _keys_of(self, ids: set[int]) -> dict[int, StreamKey]:
        """The streams of these ids, from what this store has read already, else the dictionary."""
        missing = sorted(ids - self._stream_keys.keys())
        if missing:
            rows = self._query(
                "SELECT stream, site, device, kind, place FROM event_streams"
                f" WHERE stream IN ({','.join(['?'] * len(missing))})",
                missing,
            )
            self._stream_keys.update({int(r[0]): StreamKey(r[1], r[2], r[3], r[4]) for r in rows})
        return self._stream_keys

    def _per_stream(
        self, select: str, args: Callable[[int], Sequence[Any]], only: list[int]
    ) -> tuple[str, list[Any]]:
        """``select`` once per stream (``args(stream)`` its arguments), joined by UNION ALL."""
        sql = " UNION ALL ".join(f"SELECT * FROM ({select}) AS s{i}" for i in range(len(only)))
        return sql, [v for sid in only for v in args(sid)]

    def _hot_page(
        self, bound: tuple[int, str] | None, since: int | None, only: list[int] | None, want: int
    ) -> tuple[str, list[Any]]:
        """The statement reading the newest ``want`` hot rows within the bounds (of these streams)."""
        cols = "SELECT window_start, id, received_at, stream, part FROM events_hot"
        order = " ORDER BY window_start DESC, id DESC LIMIT ?"
        lo = -_FAR if since is None else since
        hi = _FAR if bound is None else bound[0]
        keyset, kargs = "", []
        if bound is not None and bound[1]:
            # Written so that no index on (window_start, id) can serve it: the look-up is per stream.
            keyset = " AND (window_start < ? OR (window_start = ? AND id < ?))"
            kargs = [bound[0], bound[0], self._id_in(bound[1])]
        if only is not None and len(only) <= _PER_STREAM_MAX:
            # (stream, window_start) row bounds: only events_hot_stream can serve them, whatever the
            # planner believes of the newest hour's rows (no statistics yet on a live hub).
            where = " WHERE stream = ? AND (stream, window_start) >= (?, ?) AND (stream, window_start)"
            where += " <= (?, ?)" if keyset else " < (?, ?)"
            sql, params = self._per_stream(
                f"{cols}{where}{keyset}{order}", lambda sid: [sid, sid, lo, sid, hi, *kargs, want], only
            )
            return sql + order, [*params, want]
        where, args = " WHERE window_start >= ? AND window_start <= ?", [lo, hi]
        if not keyset:
            where, args = " WHERE window_start >= ? AND window_start < ?", [lo, hi]
        if only is not None:
            where += f" AND stream IN ({','.join(['?'] * len(only))})"
            args += only
        return f"{cols}{where}{keyset}{order}", [*args, *kargs, want]

    def _hot_rows(self, rows: list[Any]) -> list[Row]:
        return [
            (int(r[0]), self._id_out(r[1]), float(r[2]), int(r[3]), unpack_part(bytes(r[4]))) for r in rows
        ]

    @staticmethod
    def _starts(rows: list[Row], want: int) -> list[int]:
        """The hot rows' window starts, ascending, when they are all the hot rows within the bounds
        (fewer than ``want``); else none (``_edge`` bounds the hours then)."""
        return sorted(r[0] for r in rows) if len(rows) < want else []

    @staticmethod
    def _edge(rows: list[Row], want: int) -> int:
        """The oldest hour whose segments can still make the page: with ``want`` hot rows found,
        hours wholly before the oldest of them cannot."""
        return hour_of(min(r[0] for r in rows)) if len(rows) >= want else -_FAR

    @staticmethod
    def _choose(
        counts: list[Any],
        floor: int,
        since: int | None,
        bound: tuple[int, str] | None,
        want: int,
        hot: list[int],
        counted: int = 0,
    ) -> tuple[list[int], int, bool]:
        """The hours, newest first, of these (hour, events) counts that the page needs; the events
        their segments surely hold (plus ``counted`` from newer hours); whether the page is full.

        Full at hour h once ``want`` events are known at or after h: the segments of hours wholly
        inside the bounds and the hot rows (``hot``: every hot row's window start, ascending, when
        fewer than ``want``) from h on. An event of an older hour is older than all of them.
        """
        chosen: list[int] = []
        for hour, n in counts:
            hour = int(hour)
            if hour < floor:
                break
            chosen.append(hour)
            inside = (since is None or hour >= since) and (bound is None or hour + HOUR <= bound[0])
            counted += int(n) if inside else 0
            if counted + len(hot) - bisect_left(hot, hour) >= want:
                return chosen, counted, True
        return chosen, counted, False

    def _page_hours(
        self,
        top: int,
        floor: int,
        since: int | None,
        bound: tuple[int, str] | None,
        only: list[int] | None,
        want: int,
        hot: list[int],
    ) -> list[int]:
        """The hours whose segments may hold a row of the page, newest first, for a range too long
        to count at once: from its newest segment back, a day first (an hour unfiltered), then
        four times more at each step, until the page is full."""
        chosen: list[int] = []
        counted = 0
        span = _FIRST_SPAN if only is not None else HOUR
        hi = self._newest_segment_hour(top, floor, only)
        while hi is not None:
            lo = max(floor, hi - span + HOUR)
            counts = self._query(*self._counts_sql(lo, hi, only))
            more, counted, full = self._choose(counts, floor, since, bound, want, hot, counted)
            chosen += more
            if lo <= floor or full:
                break
            span *= 4
            hi = self._newest_segment_hour(lo - HOUR, floor, only)
        return chosen

    def _newest_segment_hour(self, top: int, floor: int, only: list[int] | None) -> int | None:
        """The newest hour in [floor, top] holding a segment (of these streams)."""
        if top < floor:
            return None
        select = "SELECT max(hour) AS h FROM event_segments WHERE"
        if only is None:
            sql, args = f"{select} hour <= ? AND hour >= ?", [top, floor]
        elif len(only) > _PER_STREAM_MAX:
            marks = ",".join(["?"] * len(only))
            sql, args = f"{select} stream IN ({marks}) AND hour <= ? AND hour >= ?", [*only, top, floor]
        else:
            sql, args = self._per_stream(f"{select} {_RANGE}", lambda sid: [sid, sid, floor, sid, top], only)
            sql = f"SELECT max(h) FROM ({sql}) AS t"
        newest = self._query(sql, args)[0][0]
        return None if newest is None else int(newest)

    def _counts_sql(self, lo: int, hi: int, only: list[int] | None) -> tuple[str, list[Any]]:
        """The statement counting the events of each hour in [lo, hi] holding segments (of these
        streams), newest first: (hour, events)."""
        select = "SELECT hour, n FROM event_segments WHERE"
        if only is None:
            sql, args = f"{select} hour >= ? AND hour <= ?", [lo, hi]
        elif len(only) > _PER_STREAM_MAX:
            marks = ",".join(["?"] * len(only))
            sql, args = f"{select} stream IN ({marks}) AND hour >= ? AND hour <= ?", [*only, lo, hi]
        else:
            sql, args = self._per_stream(f"{select} {_RANGE}", lambda sid: [sid, sid, lo, sid, hi], only)
        return f"SELECT hour, sum(n) FROM ({sql}) AS t GROUP BY hour ORDER BY hour DESC", args

    def _segment_rows(
        self, hours: list[int], bound: tuple[int, str] | None, since: int | None, only: list[int] | None
    ) -> list[Row]:
        """The events of these hours' segments (of these streams) within the bounds."""
        if not hours:
            return []
        in_hours = f"hour IN ({','.join(['?'] * len(hours))})"
        select = "SELECT stream, hour, body FROM event_segments WHERE"
        if only is None:
            sql, args = f"{select} {in_hours}", list(hours)
        elif len(only) > _PER_STREAM_MAX:
            marks = ",".join(["?"] * len(only))
            sql, args = f"{select} stream IN ({marks}) AND {in_hours}", [*only, *hours]
        else:
            lo, hi = min(hours), max(hours)
            sql, args = self._per_stream(
                f"{select} {_RANGE} AND {in_hours}", lambda sid: [sid, sid, lo, sid, hi, *hours], only
            )
        rows: list[Row] = []
        for sid, hour, body in self._query(sql, args):
            stream = int(sid)
            for ws, event_id, received_at, part in unpack_rows(bytes(body), int(hour)):
                if (bound is None or (ws, event_id) < bound) and (since is None or ws >= since):
                    rows.append((ws, event_id, received_at, stream, part))
        return rows
