"""The agent's MQTT link: drains the outbox to the broker, with a bounded window in flight.

An event leaves the outbox when the hub's receipt names it (see
:mod:`edge.outbox`); one the broker acknowledged but no receipt confirmed
within ``resend_after_s`` is sent again, the wait doubling (up to ten minutes)
while no receipt comes, so a long hub outage does not become a resend storm.
No row leaves before the end of the grid step its event id names
(:mod:`edge.alert_timing`): alerts wait up to 10 s, window events not at all.

paho-mqtt 2 silently overwrites queued QoS 1 messages once more than 65,535
await acknowledgement (message ids wrap), so the link never has more than
:attr:`MqttLink.max_inflight` messages handed to paho at once; the rest wait
on disk in the outbox, where an outage of the broker costs nothing.

With ``broker.failover`` set (the nodes of a NATS cluster), every reconnection after a lost or
refused connection goes to the next address in turn, so a device whose node died carries on
through a surviving one a second later (paho's first retry); its outbox covers the gap.

paho's in-flight window (``max_inflight``, 1,000 here; paho's own default is 20) bounds the rate
against a broker whose PUBACK waits, as NATS's MQTT does (0.3 to 1 s per PUBACK measured on this
loaded machine): into a 3-node cluster one paho client published 35 QoS 1 messages/s with 20 in
flight, 105 with 100 and 927 with 1,000 (docs/scaling.md), and an outbox's backlog after an outage
drains at that rate. Far below paho's 65,535 limit.

Given ``on_ota``, the link also takes the hub's OTA campaign commands for this device (topic
``.../ota``) and publishes the device's retained ``ota_state`` reports: one connection per
identity, since the broker binds the client id to it (docs/security.md). Its session is then
persistent, so that a command sent while the agent is offline waits at the broker.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from edge.alert_timing import MAX_WAIT_S, due_now
from edge.outbox import Outbox
from edge.troubles import Kind, Troubles, explain_connect_error
from vigie import wire
from vigie.exceptions import WireError
from vigie.mqtt import BrokerConfig, make_client

__all__ = ["MqttLink"]

log = logging.getLogger(__name__)


class MqttLink:
    """Publishes outbox rows and direct (QoS 0) messages; reconnects by itself."""

    def __init__(
        self,
        broker: BrokerConfig,
        outbox: Outbox,
        *,
        site: str,
        device: str,
        max_inflight: int = 1000,
        resend_after_s: float = 30.0,
        troubles: Troubles | None = None,
        on_ota: Callable[[wire.OtaCommand], None] | None = None,
    ) -> None:
        self.broker = broker
        self.outbox = outbox
        self.site = site
        self.device = device
        self.max_inflight = max_inflight
        self.resend_after_s = resend_after_s
        self._resend_wait = resend_after_s
        self._status_topic = wire.topic(site, device, wire.Channel.STATUS)
        self._receipt_topic = wire.topic(site, device, wire.Channel.RECEIPT)
        self._ota_topic = wire.topic(site, device, wire.Channel.OTA)
        self._on_ota = on_ota
        # The broker binds the client id to the certificate's identity (use_username_as_clientid):
        # use that identity, site/device, so the id is the same whether or not the broker rewrites it.
        self._client = make_client(broker, client_id=f"{site}/{device}", clean_session=on_ota is None)
        self._client.max_inflight_messages_set(max_inflight)
        self._client.will_set(self._status_topic, self._status_payload("offline"), qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self.troubles = troubles or Troubles()
        self._addresses = broker.addresses()
        self._address = self._addresses[0]
        self._explain_failures()
        self._lock = threading.Lock()
        self._inflight: dict[int, int] = {}  # paho mid -> outbox rowid
        self._early: dict[int, float] = {}  # acks seen before their mid was recorded
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="outbox-pump", daemon=True)
        self.published = 0
        self.confirmed = 0
        self.resent = 0

    def _status_payload(self, state: str) -> bytes:
        msg = wire.Status(site=self.site, device=self.device, ts=int(time.time()), state=state)  # type: ignore[arg-type]
        return wire.encode(msg)

    def _explain_failures(self) -> None:
        """Say why connecting fails: paho retries in silence and drops the exception.

        Its loop calls ``reconnect()`` and, on an OSError (refused, unresolvable, TLS refused),
        ``on_connect_fail`` without the error: the wrapper keeps it for that callback. The retry
        delay mirrors paho's own (``reconnect_delay_set``: doubling from 1 s up to 60 s).
        """
        self._client.reconnect_delay_set(min_delay=1, max_delay=60)
        self._attempted = False
        self._retry_delay: float | None = None
        self._last_error: BaseException | None = None
        self._refused = False  # the last attempt got a CONNACK that refused it
        cert = self.broker.tls_cert
        self._cert_mtime: float | None = cert.stat().st_mtime if cert is not None and cert.exists() else None
        original = self._client.reconnect

        def reconnect() -> Any:
            self._reload_certificate()
            if self._attempted:  # the first attempt goes to `host`, the next ones round the cluster
                self._next_address()
            self._attempted = True
            try:
                return original()
            except OSError as exc:
                self._last_error = exc
                raise

        self._client.reconnect = reconnect  # type: ignore[method-assign]
        self._client.on_connect_fail = self._on_connect_fail

    def _next_address(self) -> None:
        """Before a reconnection, move to the next node of the cluster (paho retries only one address)."""
        if len(self._addresses) < 2:
            return
        i = (self._addresses.index(self._address) + 1) % len(self._addresses)
        # paho's host/port setters refuse after a lost connection (its state is then "connection
        # lost", not "disconnected", though the socket is gone): set what reconnect() reads.
        self._client._host, self._client._port = self._addresses[i]
        self._address = self._addresses[i]
        log.info("trying another broker node", extra={"host": self._address[0], "port": self._address[1]})

    def _reload_certificate(self) -> None:
        """A certificate renewed on disk (edge/cert_renewal.py) is used from the next connection on.

        paho loads the certificate into its TLS context once; loading it again into the same
        context replaces it for the handshakes to come, without a restart.
        """
        cert, key = self.broker.tls_cert, self.broker.tls_key
        context = getattr(self._client, "_ssl_context", None)
        if cert is None or context is None:
            return
        try:
            mtime = cert.stat().st_mtime
            if mtime != self._cert_mtime:
                context.load_cert_chain(str(cert), str(key) if key else None)
                log.info("certificate reloaded", extra={"certificate": str(cert)})
                self._cert_mtime = mtime
        except (OSError, ValueError) as exc:
            log.warning("certificate not reloaded: %s", exc)

    def _next_retry_at(self) -> float:
        self._retry_delay = 1.0 if self._retry_delay is None else min(self._retry_delay * 2, 60.0)
        return time.time() + self._retry_delay

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background (retrying) and start draining the outbox."""
        self._client.connect_async(*self._address, keepalive=self.broker.keepalive)
        self._client.loop_start()
        self._thread.start()

    def stop(self, drain_timeout: float = 0.0) -> int:
        """Drain for up to ``drain_timeout`` seconds, say goodbye, disconnect.

        Returns:
            How many messages remain in the outbox (sent at the next start).
        """
        self.drain(drain_timeout)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        if self._connected.is_set():
            info = self._client.publish(
                self._status_topic, self._status_payload("offline"), qos=1, retain=True
            )
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2)
        self._client.disconnect()
        self._client.loop_stop()
        return self.outbox.depth()

    def drain(self, timeout: float) -> bool:
        """Wait until the outbox is empty; True when it is."""
        deadline = time.monotonic() + timeout
        while True:
            if self.outbox.depth() == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            self._wake.set()
            time.sleep(0.05)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def address(self) -> tuple[str, int]:
        """The broker node this link is connected (or connecting) to."""
        return self._address

    def notify(self) -> None:
        """Tell the pump that new rows are in the outbox."""
        self._wake.set()

    def publish_direct(self, channel: wire.Channel, message: wire.Message) -> None:
        """Send a message that is superseded by the next one (heartbeat): not kept when offline."""
        if self._connected.is_set():
            topic = wire.topic(self.site, self.device, channel)
            self._client.publish(topic, wire.encode(message), qos=wire.QOS[channel])

    def publish_retained(self, channel: wire.Channel, message: wire.Message) -> None:
        """Send a report the hub must find even when it subscribes later (``ota_state``): QoS 1, retained.

        Queued by paho while the broker is away and sent on reconnection.
        """
        topic = wire.topic(self.site, self.device, channel)
        self._client.publish(topic, wire.encode(message), qos=1, retain=True)

    # -- paho callbacks (network thread) ------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            where = "{}:{}".format(*self._address)
            kind: Kind = "certificate" if "authori" in str(reason).lower() else "broker"
            cause = f"the broker at {where} refused this device ({reason})"
            self._refused = True
            self.troubles.report(kind, cause, next_retry_at=self._next_retry_at())
            return
        self._retry_delay = None
        self.troubles.clear("broker")
        self.troubles.clear("certificate")
        log.info("connected to broker", extra={"host": self._address[0], "port": self._address[1]})
        client.subscribe(self._receipt_topic, qos=wire.QOS[wire.Channel.RECEIPT])
        if self._on_ota is not None:
            client.subscribe(self._ota_topic, qos=1)
        client.publish(self._status_topic, self._status_payload("online"), qos=1, retain=True)
        self._connected.set()
        self._wake.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        error = self._last_error or OSError("unknown error")
        kind, cause = explain_connect_error(error, *self._address)
        self.troubles.report(kind, cause, next_retry_at=self._next_retry_at())

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        was_up = self._connected.is_set()
        self._connected.clear()
        # Keep the in-flight map: paho re-sends those messages with the same
        # ids after reconnecting, and their PUBACKs then clear the rows.
        if self._stop.is_set():
            return
        if self._refused:  # already explained by _on_connect (the CONNACK's reason)
            self._refused = False
        elif was_up:
            log.warning("broker connection lost; events wait in the outbox", extra={"reason": str(reason)})
        elif self.broker.tls_cert is not None:
            # Closed before any CONNACK: with TLS 1.3 a refused client certificate (revoked, expired,
            # another CA) shows only as this, after a handshake the client thought complete.
            where = "{}:{}".format(*self._address)
            cause = (
                f"the broker at {where} closed the connection before accepting it: this device's "
                "certificate is probably revoked or expired (re-enrol), or from another CA"
            )
            self.troubles.report("certificate", cause, next_retry_at=self._next_retry_at())
        else:
            cause = "the broker at {}:{} closed the connection ({})".format(*self._address, reason)
            self.troubles.report("broker", cause, next_retry_at=self._next_retry_at())

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        # Called with paho's out-message lock held: never call into paho here.
        with self._lock:
            rowid = self._inflight.get(mid)
            if rowid is None:
                # The ack beat the pump's bookkeeping (or it is a status message).
                self._early[mid] = time.monotonic()
        if rowid is not None:
            # The row stays in flight until it is marked sent: out of the map earlier, the pump
            # would see an unsent row that nobody holds and publish it again.
            self._acked(rowid)
            with self._lock:
                self._inflight.pop(mid, None)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == self._ota_topic and self._on_ota is not None:
            self._ota_command(bytes(message.payload))
            return
        if message.topic != self._receipt_topic:
            return
        try:
            receipt = wire.decode(bytes(message.payload), wire.Channel.RECEIPT)
        except WireError as exc:
            log.warning("receipt refused", extra={"field": exc.field, "reason": exc.reason})
            return
        mine = (receipt.site, receipt.device) == (self.site, self.device)
        if not isinstance(receipt, wire.Receipt) or not mine:
            log.warning("receipt for another device ignored", extra={"topic": message.topic})
            return
        removed = self.outbox.confirm(receipt.ids)
        self.confirmed += removed
        self._resend_wait = self.resend_after_s  # the hub is back: resend promptly next time
        self._wake.set()

    def _ota_command(self, payload: bytes) -> None:
        try:
            command = wire.decode(payload, wire.Channel.OTA)
        except WireError as exc:
            log.warning("bad OTA command ignored", extra={"field": exc.field, "reason": exc.reason})
            return
        mine = (command.site, command.device) == (self.site, self.device)
        if isinstance(command, wire.OtaCommand) and mine and self._on_ota is not None:
            self._on_ota(command)  # only queued: the update runs in the OTA worker's thread

    def _acked(self, rowid: int) -> None:
        self.outbox.mark_sent([rowid], time.monotonic())
        self.published += 1
        self._wake.set()

    # -- pump thread -----------------------------------------------------------------
    def _pump(self) -> None:
        wait = MAX_WAIT_S
        while not self._stop.is_set():
            self._wake.wait(timeout=wait)
            self._wake.clear()
            if not self._connected.is_set():
                continue
            with self._lock:
                busy = list(self._inflight.values())
            room = self.max_inflight - len(busy)
            items = self.outbox.peek(room, exclude=busy, resend_before=time.monotonic() - self._resend_wait)
            # Alerts wait for the end of their 10 s grid step: their arrival tells nothing finer.
            items, wait = due_now(items, time.time())
            again = sum(1 for item in items if item.sent is not None)
            if again:
                # No receipt in time: the broker lost them, or the hub is down or behind.
                self.resent += again
                log.warning(
                    "no receipt from the hub; sending again",
                    extra={"messages": again, "waited_s": round(self._resend_wait)},
                )
                self._resend_wait = min(self._resend_wait * 2, 600.0)
            for item in items:
                if not self._connected.is_set():
                    break
                # Not under self._lock: paho calls _on_publish holding its own lock.
                info = self._client.publish(item.topic, item.payload, qos=item.qos)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    break
                if item.qos == 0:
                    self._acked(item.rowid)
                    continue
                with self._lock:
                    early = self._early.pop(info.mid, None) is not None
                    if not early:
                        self._inflight[info.mid] = item.rowid
                if early:
                    self._acked(item.rowid)
            self._forget_stale_early_acks()

    def _forget_stale_early_acks(self) -> None:
        # An unmatched ack older than a few seconds belongs to a status message;
        # drop it before paho's message ids could wrap round to it.
        cutoff = time.monotonic() - 10.0
        with self._lock:
            for mid in [m for m, t in self._early.items() if t < cutoff]:
                del self._early[mid]
