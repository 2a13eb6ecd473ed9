"""The ingest's source on a NATS cluster: a replicated JetStream stream read by a shared durable consumer.

Devices publish over MQTT to any node of the cluster; the stream (R3 by default)
captures their events, heartbeats and statuses. Every ingest worker, on any
host, pulls batches from the same durable consumer, so the cluster spreads the
work and a worker that dies leaves its unacknowledged messages to the others
once ``ack_wait_s`` has passed. A batch is acknowledged only after the caller
has committed it, and the receipts it returns are published as plain NATS
messages on ``vigie.v1.<site>.<device>.receipt``, which a device's MQTT
subscription to ``vigie/v1/<site>/<device>/receipt`` receives (QoS 0, as on
Mosquitto: a lost receipt costs one resend, which the store drops).

The NATS client reconnects by itself to a surviving node; while the stream's
leader is being re-elected (a few seconds after a node dies) fetches fail and
are retried. Same contract as :class:`hub.mqtt_receiver.LeanSubscriber`:
``on_batch`` returns the receipts once stored, or None when stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hub.jetstream_config import JetStreamSettings, stream_subjects, subject_of, topic_of
from hub.mqtt_receiver import BatchResult, Delivery

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.js import JetStreamContext

__all__ = ["JetStreamSource", "ensure_stream"]

log = logging.getLogger(__name__)

#: JetStream's error code for "stream name already in use" (with another configuration).
_STREAM_NAME_IN_USE = 10058


async def ensure_stream(js: JetStreamContext, settings: JetStreamSettings, *, timeout: float = 30.0) -> None:
    """Create the stream and the shared durable consumer if they are missing (idempotent).

    Retried until ``timeout``: right after the cluster starts, or while a node is being
    replaced, JetStream has no meta leader and refuses (503) or does not answer.
    """
    from nats.js import api
    from nats.js.errors import BadRequestError

    stream = api.StreamConfig(
        name=settings.stream, subjects=stream_subjects(), num_replicas=settings.replicas,
        retention=api.RetentionPolicy(settings.retention), storage=api.StorageType.FILE,
        max_bytes=settings.max_bytes,
        # Full: refuse new messages rather than drop acknowledged-to-the-device ones (the
        # devices' outboxes keep what is refused).
        discard=api.DiscardPolicy.NEW,
    )  # fmt: skip
    consumer = api.ConsumerConfig(
        durable_name=settings.durable, ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.ALL, ack_wait=settings.ack_wait_s,
        max_ack_pending=settings.max_ack_pending, max_deliver=-1,
        # Pull requests waiting at once: every worker keeps one or two.
        max_waiting=512,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        try:
            try:
                await js.add_stream(stream)
            except BadRequestError as exc:
                if exc.err_code != _STREAM_NAME_IN_USE:
                    raise
                log.info("stream exists with another configuration; kept", extra={"stream": settings.stream})
            await js.add_consumer(settings.stream, consumer)
            return
        except Exception as exc:  # no meta leader yet (503), no answer in time
            if isinstance(exc, BadRequestError) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


class JetStreamSource:
    """Pulls batches from the shared durable consumer; acks each once ``on_batch`` has stored it."""

    def __init__(
        self,
        settings: JetStreamSettings,
        client_id: str,
        on_batch: Callable[[list[Delivery]], BatchResult],
        *,
        batch_size: int = 500,
        batch_delay_s: float = 0.2,
        on_state: Callable[[bool, str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.client_id = client_id
        self.on_batch = on_batch
        self.batch_size = batch_size
        #: A fetch waits this long for a first message when the stream is empty.
        self.idle_wait_s = max(1.0, batch_delay_s)
        self.batch_delay_s = batch_delay_s
        self.on_state = on_state or (lambda up, why: None)
        #: Unused here: a worker that leaves simply stops pulling; the consumer is shared.
        self.retire = False
        self.generation = 0

    async def _connect(self) -> NatsClient:
        import nats

        async def disconnected() -> None:
            self.on_state(False, "NATS connection lost; reconnecting to another node")

        async def reconnected() -> None:
            self.on_state(True, "reconnected")

        async def error(exc: Exception) -> None:  # the client's own retries: logged, not raised
            log.debug("NATS client error: %s", exc)

        s = self.settings
        # The node's certificate is checked against the device CA (hub.pki signed it), not the system's.
        tls = ssl.create_default_context(cafile=str(s.tls_ca)) if s.tls_ca else None
        return await nats.connect(
            servers=list(s.servers), name=self.client_id, user=s.user, password=s.password, tls=tls,
            connect_timeout=5, reconnect_time_wait=0.5, max_reconnect_attempts=-1,
            disconnected_cb=disconnected, reconnected_cb=reconnected, error_cb=error,
        )  # fmt: skip

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, pull and hand over batches until ``stop`` is set; reconnects by itself."""
        backoff = 0.5
        while not stop.is_set():
            try:
                nc = await self._connect()
            except Exception as exc:  # no node reachable (NoServersError), refused credentials
                self.on_state(False, f"no NATS node reachable in {list(self.settings.servers)}: {exc}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.5
            try:
                await self._consume(nc, stop)
            except Exception as exc:  # the stream refused (placement, a wrong setting): said, retried
                self.on_state(False, f"JetStream stream {self.settings.stream!r} unusable: {exc}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await nc.close()

    async def _consume(self, nc: NatsClient, stop: asyncio.Event) -> None:
        from nats.errors import TimeoutError as NatsTimeoutError

        js = nc.jetstream()
        await ensure_stream(js, self.settings)
        sub = await js.pull_subscribe_bind(self.settings.durable, self.settings.stream)
        self.generation += 1
        self.on_state(True, "connected")
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            if nc.is_closed:
                return
            try:
                msgs = await sub.fetch(self.batch_size, timeout=self.idle_wait_s)
            except (NatsTimeoutError, TimeoutError):
                continue  # nothing to take (or a leader election in progress)
            except Exception as exc:  # leader lost, no responders, connection gone: retried
                log.debug("fetch failed; retrying: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2)
                continue
            msgs = await self._fill(sub, msgs)
            now = time.time()
            batch = [Delivery(topic_of(m.subject), m.data, 1, 0, self.generation, now) for m in msgs]
            result = await loop.run_in_executor(None, self.on_batch, batch)
            if result is None:  # stopping before it was stored: redelivered to another worker
                return
            await self._settle(nc, msgs, result)

    async def _fill(self, sub: Any, msgs: list[Any]) -> list[Any]:
        """Keep fetching for up to ``batch_delay_s`` after the first message: one commit for many.

        A fetch returns what the consumer has at that instant; under a steady trickle that is a
        few messages, and a commit (and fsync) per few messages would cap the ingest far below
        what the store takes in batches.
        """
        from nats.errors import TimeoutError as NatsTimeoutError

        deadline = time.monotonic() + self.batch_delay_s
        while len(msgs) < self.batch_size and (left := deadline - time.monotonic()) > 0.01:
            try:
                msgs += await sub.fetch(self.batch_size - len(msgs), timeout=left)
            except (NatsTimeoutError, TimeoutError):
                break
            except Exception:  # the node went away mid-batch: store what we have
                break
        return msgs

    @staticmethod
    async def _settle(nc: NatsClient, msgs: list[Any], result: BatchResult) -> None:
        """Stored: acknowledge every message, then send the receipts."""
        for m in msgs:
            with contextlib.suppress(Exception):  # a lost ack: redelivered, dropped by the store
                await m.ack()
        for topic, payload in result or ():
            with contextlib.suppress(Exception):  # a lost receipt: the device resends
                await nc.publish(subject_of(topic), payload)
        with contextlib.suppress(Exception):
            await nc.flush(timeout=5)
