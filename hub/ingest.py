"""MQTT ingest: subscribe, validate, store in batches, acknowledge only after the commit.

The hub uses paho's manual acknowledgement: a QoS 1 message is PUBACKed
only once its batch is committed, so a hub killed mid-batch gets the
messages again from the broker (persistent session), and the store's
idempotent insert drops any that did make it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from hub.storage import QuarantineRecord, Store
from vigie import wire
from vigie.exceptions import VigieError, WireError
from vigie.mqtt import BrokerConfig, make_client

__all__ = ["IngestStats", "Ingestor", "classify"]

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


@dataclass
class IngestStats:
    """Counters exposed at /healthz."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    heartbeats: int = 0
    statuses: int = 0
    quarantined: int = 0
    batches: int = 0
    last_error: str | None = None
    started_at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class _Inbound:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received_at: float


class Ingestor:
    """One ingest worker: a paho client feeding a batching writer thread."""

    def __init__(
        self,
        broker: BrokerConfig,
        store: Store,
        *,
        client_id: str = "vigie-hub-ingest",
        batch_size: int = 500,
        batch_delay_s: float = 0.2,
        share_group: str | None = None,
    ) -> None:
        self.broker = broker
        self.store = store
        self.stats = IngestStats()
        self.batch_size = batch_size
        self.batch_delay_s = batch_delay_s
        if share_group and broker.protocol != "5":
            raise VigieError(
                f"shared subscriptions (group {share_group!r}) need MQTT 5: set the broker protocol to 5 "
                "(Mosquitto ≥ 1.6; the embedded amqtt broker speaks only 3.1.1: run one worker there)"
            )
        self._share_group = share_group
        # A persistent session: the broker keeps QoS 1 messages while the hub is down.
        self._client = make_client(broker, client_id, clean_session=False, manual_ack=True)
        # One hub, many devices: the hub may come back fast without a thundering herd.
        self._client.reconnect_delay_set(min_delay=1, max_delay=5)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._queue: queue.Queue[_Inbound] = queue.Queue(maxsize=50_000)
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="ingest-writer", daemon=True)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        self._writer.start()
        if self.broker.protocol == "5":
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            # MQTT 5: a persistent session is clean_start=False plus an expiry; the broker keeps
            # our subscription and queues QoS 1 messages for an hour while we are away.
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 3600
            self._client.connect_async(
                self.broker.host, self.broker.port, keepalive=self.broker.keepalive, clean_start=False,
                properties=props,
            )  # fmt: skip
        else:
            self._client.connect_async(self.broker.host, self.broker.port, keepalive=self.broker.keepalive)
        self._client.loop_start()

    def stop(self, *, retire: bool = False) -> None:
        """Stop; the persistent session stays so that the broker queues for us meanwhile.

        Args:
            retire: leave for good (scaling down): unsubscribe first so the broker stops routing
                our share of a shared subscription here, store and acknowledge what was already
                received, then end the session. Without this, a removed worker's session would
                keep receiving its share, queued, until the session expires.
        """
        if retire:
            for channel in (wire.Channel.EVENT, wire.Channel.HEARTBEAT, wire.Channel.STATUS):
                self._client.unsubscribe(wire.subscription(channel, self._share_group))
            time.sleep(1.0)  # let in-flight deliveries land in the queue
        self._stop.set()
        self._writer.join(timeout=30)
        if retire and self.broker.protocol == "5":
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0
            self._client.disconnect(properties=props)
        else:
            self._client.disconnect()
        self._client.loop_stop()
        log.info("ingest stopped", extra={k: v for k, v in asdict(self.stats).items() if k != "started_at"})

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            self.stats.last_error = f"broker refused connection: {reason}"
            log.error("broker refused connection", extra={"reason": str(reason)})
            return
        for channel in (wire.Channel.EVENT, wire.Channel.HEARTBEAT, wire.Channel.STATUS):
            client.subscribe(wire.subscription(channel, self._share_group), qos=wire.QOS[channel])
        self._connected.set()
        log.info("ingest connected", extra={"host": self.broker.host, "port": self.broker.port})

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            log.warning("ingest lost the broker; reconnecting", extra={"reason": str(reason)})

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # Blocks when the writer is far behind: back-pressure reaches the broker,
        # which queues for us, rather than this process growing without bound.
        self._queue.put(_Inbound(msg.topic, bytes(msg.payload), msg.mid, msg.qos, time.time()))

    def _write_loop(self) -> None:
        while not self._stop.is_set() or not self._queue.empty():
            batch: list[_Inbound] = []
            try:
                batch.append(self._queue.get(timeout=0.2))
            except queue.Empty:
                continue
            deadline = time.monotonic() + self.batch_delay_s
            while len(batch) < self.batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
            if not self._write_until_stored(batch):
                return  # stopping with the store down: unacknowledged, redelivered next session
            for item in batch:
                if item.qos > 0:
                    self._client.ack(item.mid, item.qos)

    def _write_until_stored(self, batch: list[_Inbound]) -> bool:
        """Write the batch, retrying with backoff while the store fails; False only when stopping.

        A QoS 1 message the hub has not acknowledged is redelivered by the broker only when the
        session reconnects, so a failed batch must be retried here, never dropped.
        """
        delay = 0.1
        while True:
            try:
                self._write(batch)
                return True
            except Exception as exc:  # the store failed (down, deadlock, disk full): keep the batch
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "batch write failed; retrying", extra={"error": self.stats.last_error, "retry_s": delay}
                )
                if self._stop.wait(delay):
                    return False
                delay = min(delay * 2, 10.0)

    def _write(self, batch: list[_Inbound]) -> None:
        events: list[wire.Event] = []
        bad: list[QuarantineRecord] = []
        heartbeats: list[tuple[wire.Heartbeat, float]] = []
        statuses: list[tuple[wire.Status, float]] = []
        for item in batch:
            result = classify(item.topic, item.payload, item.received_at)
            if isinstance(result, QuarantineRecord):
                bad.append(result)
                log.warning(
                    "message quarantined",
                    extra={"topic": item.topic, "field": result.field, "reason": result.reason},
                )
            elif isinstance(result, wire.Heartbeat):
                heartbeats.append((result, item.received_at))
            elif isinstance(result, wire.Status):
                statuses.append((result, item.received_at))
            else:
                events.append(result)
        now = time.time()
        inserted = self.store.add_events(events, now)
        self.store.quarantine(bad)
        for beat, at in heartbeats:
            self.store.record_heartbeat(beat, at)
        for status, at in statuses:
            self.store.record_status(status, at)
        s = self.stats
        s.received += len(batch)
        s.stored += inserted
        s.duplicates += len(events) - inserted
        s.quarantined += len(bad)
        s.heartbeats += len(heartbeats)
        s.statuses += len(statuses)
        s.batches += 1
