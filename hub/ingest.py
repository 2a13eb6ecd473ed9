"""MQTT ingest: subscribe, validate, store in batches, acknowledge only after the commit.

After the commit each device also gets a *receipt* naming its events now in
the store (or quarantined): the device's outbox keeps every event until then,
because the broker's own acknowledgement does not survive a broker crash or a
full broker queue (see :mod:`edge.outbox`).

A QoS 1 message is PUBACKed only once its batch is committed, so a hub killed
mid-batch gets the messages again from the broker (persistent session), and
the store's idempotent insert drops any that did make it. The MQTT side is
:mod:`hub.mqtt_receiver` (asyncio; paho's per-message cost was the hub's
largest).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import msgpack

from hub.disclosure.floor import coarse_arrival, device_k_refusal
from hub.jetstream_config import JetStreamSettings
from hub.metrics import BATCH_COMMIT_SECONDS
from hub.mqtt_receiver import BatchResult, Delivery, LeanSubscriber
from hub.ratelimit import RateLimiter
from hub.storage import QuarantineRecord, Store
from vigie import wire
from vigie.exceptions import VigieError, WireError
from vigie.mqtt import BrokerConfig

if TYPE_CHECKING:
    from hub.jetstream_source import JetStreamSource

__all__ = ["IngestStats", "Ingestor", "classify", "receipts"]

# Hub -> device kinds and OTA progress (read by the campaign runner), never stored here.
_NOT_INGESTED = (wire.OtaCommand, wire.OtaState, wire.Receipt)
log = logging.getLogger(__name__)


def classify(topic: str, payload: bytes, received_at: float) -> wire.Message | QuarantineRecord:
    """Decode one message, or say why it goes to quarantine (pure; no I/O)."""
    site = device = None
    try:
        parts = wire.parse_topic(topic)
        site, device = parts.site, parts.device
        message = wire.decode(payload, parts.channel)
        # The topic carries the broker-authenticated identity; the body must agree.
        if message.site != parts.site or message.device != parts.device:
            raise WireError(
                "device",
                f"body names {message.site}/{message.device} but the topic is {parts.site}/{parts.device}",
            )
        return message
    except WireError as exc:
        return QuarantineRecord(topic, site, device, exc.field, exc.reason, payload, received_at)


def _window_end(event: wire.Event) -> float:
    """When an event's data were complete on the device: the end of its window, or its own time."""
    if isinstance(event, wire.Alert):
        return float(event.ts)
    return float(event.window_start + event.window_s)


def receipts(settled: dict[tuple[str, str], list[str]], ts: int) -> list[tuple[str, bytes]]:
    """One receipt message (or several, of at most RECEIPT_MAX_IDS ids) per device (pure).

    Packed directly rather than through the pydantic model: one receipt per device per batch
    is on the ingest's hot path, and every id in it comes from a message already validated.
    ``tests/test_wire.py`` checks that the result decodes as a valid ``Receipt``.
    """
    out: list[tuple[str, bytes]] = []
    n = wire.RECEIPT_MAX_IDS
    for (site, device), ids in settled.items():
        topic = wire.topic(site, device, wire.Channel.RECEIPT)
        for i in range(0, len(ids), n):
            body = {"v": wire.SCHEMA_VERSION, "site": site, "device": device, "kind": "receipt", "ts": ts,
                    "ids": ids[i : i + n]}  # fmt: skip
            out.append((topic, msgpack.packb(body)))
    return out


def _per_sender(batch: list[Delivery]) -> dict[str, int]:
    """Messages per sender (``vigie/v1/<site>/<device>``) in a batch (pure)."""
    counts: dict[str, int] = {}
    for item in batch:
        who = item.topic[: item.topic.rfind("/")]
        counts[who] = counts.get(who, 0) + 1
    return counts


@dataclass
class IngestStats:
    """Counters exposed at /healthz."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    heartbeats: int = 0
    statuses: int = 0
    quarantined: int = 0
    rate_limited: int = 0
    batches: int = 0
    #: Quarantined messages by the field that failed (bounded: the wire protocol's field names).
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    #: Receive time minus the end of the newest event window in the last batch with events.
    lag_s: float | None = None
    last_error: str | None = None
    started_at: float = field(default_factory=time.time)


class Ingestor:
    """One ingest worker: a lean MQTT subscriber (asyncio, in a thread) feeding batched writes."""

    def __init__(
        self,
        broker: BrokerConfig,
        store: Store,
        *,
        client_id: str = "vigie-hub-ingest",
        batch_size: int = 500,
        batch_delay_s: float = 0.2,
        share_group: str | None = None,
        device_rate: float = 100.0,
        device_burst: int = 10_000,
        min_device_k: int = 3,
        jetstream: JetStreamSettings | None = None,
    ) -> None:
        """``jetstream`` set, the ingest reads the NATS cluster's stream instead (``broker`` unused then)."""
        if share_group and broker.protocol != "5" and jetstream is None:
            raise VigieError(
                f"shared subscriptions (group {share_group!r}) need MQTT 5: set the broker protocol to 5 "
                "(Mosquitto ≥ 1.6; the embedded amqtt broker speaks only 3.1.1: run one worker there)"
            )
        self.broker = broker
        self.store = store
        self.stats = IngestStats()
        # One device flooding (a bug, a stolen key) must not starve the others. What the
        # limit refuses is acknowledged but neither stored nor receipted: an honest device
        # sends it again later (its outbox keeps it); a flooder's excess is gone.
        # The buckets are in the store: N ingest workers allow a device one rate, not N.
        self._limiter = RateLimiter(store, "device", device_rate, device_burst)
        self.min_device_k = min_device_k
        self._limited_logged: dict[str, float] = {}
        self._share_group = share_group
        filters = [
            wire.subscription(c, share_group)
            for c in (wire.Channel.EVENT, wire.Channel.HEARTBEAT, wire.Channel.STATUS)
        ]
        self._subscriber: LeanSubscriber | JetStreamSource
        if jetstream is not None:
            from hub.jetstream_source import JetStreamSource  # the NATS client only where it is used

            self._subscriber = JetStreamSource(
                jetstream, client_id, self._on_batch, batch_size=batch_size, batch_delay_s=batch_delay_s,
                on_state=self._on_state,
            )  # fmt: skip
            self._where = {"servers": ",".join(jetstream.servers)}
        else:
            self._subscriber = LeanSubscriber(
                broker, client_id, filters, self._on_batch, batch_size=batch_size,
                batch_delay_s=batch_delay_s, on_state=self._on_state,
            )  # fmt: skip
            self._where = {"host": broker.host, "port": str(broker.port)}
        self.client_id = client_id
        self._last_status = 0.0
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_async: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        self._thread.start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self, *, retire: bool = False) -> None:
        """Stop after storing and acknowledging what was received; the persistent session stays.

        Args:
            retire: this worker leaves for good (scaling down); used with a fresh start in
                retire mode (see ``vigie hub ingest --retire``), the session is ended.
        """
        self._stop.set()
        if self._loop is not None and self._stop_async is not None:
            self._loop.call_soon_threadsafe(self._stop_async.set)
        self._thread.join(timeout=60)
        log.info("ingest stopped", extra={k: v for k, v in asdict(self.stats).items() if k != "started_at"})

    def start_retiring(self) -> None:
        """Connect only to drain this worker's session: unsubscribe, store what is queued, end the session."""
        self._subscriber.retire = True
        self.start()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._stop_async = asyncio.Event()
        if self._stop.is_set():
            self._stop_async.set()
        try:
            loop.run_until_complete(self._serve(self._stop_async))
        finally:
            loop.close()

    async def _serve(self, stop: asyncio.Event) -> None:
        # Counters are also reported every 5 s between batches: a quiet fleet's last batch
        # would otherwise never reach /healthz and /metrics.
        ticker = asyncio.create_task(self._tick())
        try:
            await self._subscriber.run(stop)
        finally:
            ticker.cancel()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            await asyncio.to_thread(self.report_status, time.time())

    def _on_state(self, up: bool, why: str) -> None:
        if up:
            self._connected.set()
            log.info("ingest connected", extra=self._where)
            self.report_status(time.time(), force=True)
        else:
            was_up = self._connected.is_set()
            self._connected.clear()
            if self._stop.is_set():
                return
            self.stats.last_error = why
            where = {"reason": why, **self._where}
            log.warning("ingest lost the broker; reconnecting" if was_up else "broker unreachable; retrying",
                        extra=where)  # fmt: skip
            # Recorded even before a first connection: a worker that cannot connect (a TLS
            # handshake refused, say) shows as not connected at /healthz instead of not at all.
            self.report_status(time.time(), force=was_up)

    def _on_batch(self, batch: list[Delivery]) -> BatchResult:
        """Called from a worker thread; the receipts once stored (the subscriber then acknowledges)."""
        return self._write_until_stored(batch)

    def _write_until_stored(self, batch: list[Delivery]) -> BatchResult:
        """Write the batch, retrying with backoff while the store fails; None only when stopping.

        A QoS 1 message the hub has not acknowledged is redelivered by the broker only when the
        session reconnects, so a failed batch must be retried here, never dropped.
        """
        delay = 0.1
        allowed: dict[str, int] | None = None
        while True:
            try:
                # Decided once per batch: a retry after a failed write must not charge the devices twice.
                if allowed is None:
                    allowed = self._limiter.take(_per_sender(batch))
                return self._write(batch, dict(allowed))
            except Exception as exc:  # the store failed (down, deadlock, disk full): keep the batch
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "batch write failed; retrying", extra={"error": self.stats.last_error, "retry_s": delay}
                )
                if self._stop.wait(delay):
                    return None
                delay = min(delay * 2, 10.0)

    def _write(self, batch: list[Delivery], allowed: dict[str, int]) -> list[tuple[str, bytes]]:
        """Store the batch; ``allowed``: how many messages each sender may have stored (rate limit)."""
        events: list[wire.Event] = []
        settled: dict[tuple[str, str], list[str]] = {}  # (site, device) -> ids to receipt
        bad: list[QuarantineRecord] = []
        heartbeats: list[tuple[wire.Heartbeat, float]] = []
        statuses: list[tuple[wire.Status, float]] = []
        limited = 0
        mono = time.monotonic()
        for item in batch:  # each sender's first `allowed` messages pass
            who = item.topic[: item.topic.rfind("/")]  # vigie/v1/<site>/<device>
            allowed[who] -= 1
            if allowed[who] < 0:
                limited += 1
                if mono - self._limited_logged.get(who, -60.0) >= 60.0:
                    self._limited_logged[who] = mono
                    log.warning(
                        "device over its message rate; excess not stored", extra={"topic": item.topic}
                    )
                continue
            result = classify(item.topic, item.payload, item.received_at)
            if not isinstance(result, QuarantineRecord) and (
                refusal := device_k_refusal(result, self.min_device_k)
            ):
                result = QuarantineRecord(
                    item.topic, result.site, result.device, "k", refusal, item.payload, item.received_at
                )
            if isinstance(result, QuarantineRecord):
                bad.append(result)
                on_event_channel = item.topic.endswith("/" + wire.Channel.EVENT.value)
                qid = wire.peek_id(item.payload) if on_event_channel and result.device else None
                if qid is not None:
                    # Sending it again would only quarantine it again.
                    settled.setdefault((result.site, result.device), []).append(qid)  # type: ignore[arg-type]
                log.warning(
                    "message quarantined",
                    extra={"topic": item.topic, "field": result.field, "reason": result.reason},
                )
            elif isinstance(result, wire.Heartbeat):
                heartbeats.append((result, item.received_at))
            elif isinstance(result, wire.Status):
                statuses.append((result, item.received_at))
            elif isinstance(result, _NOT_INGESTED):
                # Not subscribed here (the campaign runner reads them); dropped if ever delivered.
                log.warning("message not meant for the ingest ignored", extra={"topic": item.topic})
            else:
                events.append(result)
                settled.setdefault((result.site, result.device), []).append(result.id)
        now = time.time()
        with BATCH_COMMIT_SECONDS.time():
            alerts = [e for e in events if isinstance(e, wire.Alert)]
            inserted = self.store.add_events([e for e in events if not isinstance(e, wire.Alert)], now)
            if alerts:  # stored with the grid time, not the arrival second (docs/privacy.md)
                inserted += self.store.add_events(alerts, coarse_arrival(now))
            self.store.quarantine(bad)
            for beat, at in heartbeats:
                self.store.record_heartbeat(beat, at)
            for status, at in statuses:
                self.store.record_status(status, at)
        s = self.stats
        if events:
            s.lag_s = round(max(0.0, now - max(_window_end(e) for e in events)), 3)
        for record in bad:
            s.quarantine_reasons[record.field] = s.quarantine_reasons.get(record.field, 0) + 1
        s.received += len(batch)
        s.stored += inserted
        s.duplicates += len(events) - inserted
        s.quarantined += len(bad)
        s.rate_limited += limited
        s.heartbeats += len(heartbeats)
        s.statuses += len(statuses)
        s.batches += 1
        self.report_status(now)
        return receipts(settled, int(now))

    def report_status(self, now: float, *, force: bool = False) -> None:
        """Every few seconds, write this worker's counters where any API process can read them."""
        if not force and now - self._last_status < 5.0:
            return
        self._last_status = now
        stats = {k: v for k, v in asdict(self.stats).items() if k != "started_at"}
        try:
            self.store.record_ingest_status(self.client_id, self.connected, stats, now)
        except Exception:  # health reporting must never cost an event
            log.debug("could not record ingest status", exc_info=True)
