"""Events, hourly roll-ups, devices' traffic, quarantine and ingest workers' status.

Writes are idempotent on the event id (``ON CONFLICT DO NOTHING … RETURNING``),
and roll-ups are incremented only for the rows that were really inserted, in
the same transaction: a redelivered message changes nothing, twice over.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from hub.storage.base import QUARANTINE_KEEP_BYTES, EventQuery, QuarantineRecord
from hub.storage.rollup import RollupRow, rollup_rows
from hub.storage.sqlbase import INSERT_CHUNK, SqlBase
from vigie import wire

__all__ = ["EventSql", "clock_skew_s", "index_columns"]


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
    """The ingest's writes and the API's reads of what devices sent."""

    def _prepare_partitions(self, cur: Any, window_starts: set[int]) -> None:
        """PostgreSQL creates the monthly partitions a batch needs."""

    def add_events(self, events: Sequence[wire.Event], received_at: float) -> int:
        if not events:
            return 0
        by_id = {e.id: e for e in events}
        inserted: list[str] = []
        with self._tx() as cur:
            self._prepare_partitions(cur, {index_columns(e)[5] for e in by_id.values()})
            items = list(by_id.values())
            for i in range(0, len(items), INSERT_CHUNK):
                chunk = items[i : i + INSERT_CHUNK]
                rows = [(*index_columns(e), e.model_dump_json(), received_at) for e in chunk]
                inserted += self._insert_events(cur, rows)
            new = [by_id[i] for i in inserted]
            self._add_rollups(cur, new)
            per_device: dict[tuple[str, str], int] = {}
            for e in events:  # every delivery counts as traffic, even a duplicate
                per_device[(e.site, e.device)] = per_device.get((e.site, e.device), 0) + 1
            self._touch_many(cur, per_device, received_at)
        return len(inserted)

    def _insert_events(self, cur: Any, rows: list[tuple[Any, ...]]) -> list[str]:
        """Insert rows, skipping ids already stored; returns the ids really inserted."""
        values = ",".join(["(?,?,?,?,?,?,?,?,?)"] * len(rows))
        cur.execute(
            "INSERT INTO events (id, site, device, kind, place, window_start, window_s, body,"
            f" received_at) VALUES {values} ON CONFLICT DO NOTHING RETURNING id",
            [v for row in rows for v in row],
        )
        return [r[0] for r in cur.fetchall()]

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

    def list_events(self, query: EventQuery) -> tuple[list[dict[str, Any]], int | None]:
        where, args = self._where([
            ("site = ?", query.site), ("device = ?", query.device), ("kind = ?", query.kind),
            ("place = ?", query.place), ("window_start >= ?", query.since), ("window_start < ?", query.until),
            ("seq < ?", query.cursor),
        ])  # fmt: skip
        rows = self._query(
            f"SELECT seq, body, received_at FROM events{where} ORDER BY seq DESC LIMIT ?",
            (*args, query.limit + 1),
        )
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        data = [{**json.loads(r[1]), "received_at": r[2]} for r in rows]
        return data, (int(rows[-1][0]) if more and rows else None)

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

    def count_events(self) -> int:
        return int(self._query("SELECT count(*) FROM events")[0][0])
