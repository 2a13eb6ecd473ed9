"""`vigie sim`: a fleet of simulated devices against a real broker and hub, for load tests.

Thousands of devices in one process: each is an asyncio task with its own
MQTT 3.1.1 connection (a minimal client on :mod:`vigie.mqtt_codec`: CONNECT,
PUBLISH QoS 0/1, PUBACK, PINGREQ; paho's threads would not scale to 10,000), with
realistic schedules: a retained ``online`` status, a heartbeat every
``heartbeat_s``, one ``zone_count`` event per zone per window, starts spread
over the first period, and optional reconnect storms (every device drops its
connection at once and comes back). Every event is a valid v1 message with a
unique id; the simulator counts what the broker acknowledged so that a test
can check that the store holds exactly that.

Like an agent, each device keeps its events until the hub's *receipt* names
them (:class:`Unreceipted`, in memory: a simulated device has no disk): it
subscribes to its own ``receipt`` topic, sends an event again (same id, which
the store drops as a duplicate) when no receipt comes within
``resend_after_s``, the wait doubling while none comes, and after the run waits
up to ``drain_s`` for the last receipts. A broker's PUBACK alone is not enough:
NATS 2.9's MQTT acknowledges a publish that its stream, without a leader
during an election, never stores (docs/scaling.md). ``receipts=False`` is for a
bare broker with no hub behind it: the PUBACK then ends an event's journey.

Longer than 400 lines because the device's loop, its MQTT client and its
receipt bookkeeping are one simulated device: split, each half would only be
read with the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from vigie import __version__, mqtt_codec, wire
from vigie.exceptions import WireError
from vigie.mqtt_codec import PacketType

__all__ = ["FleetResult", "MiniMqtt", "MqttRefusedError", "SimOptions", "Unreceipted", "run_fleet"]

#: The longest wait between two resends of an event the hub does not receipt (the agent's is 10 min;
#: a simulation is shorter).
MAX_RESEND_WAIT_S = 120.0


class MqttRefusedError(ConnectionError):
    """The broker answered CONNACK with a non-zero return code."""


class MiniMqtt:
    """Just enough MQTT 3.1.1 to publish like a device: one connection, QoS 0 and 1."""

    def __init__(self, host: str, port: int, client_id: str, *, keepalive: int = 60) -> None:
        self.host, self.port, self.client_id, self.keepalive = host, port, client_id, keepalive
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._next_id = 0
        self._read_task: asyncio.Task[None] | None = None
        #: Messages the broker delivers to our subscriptions: (topic, payload), unless ``handlers``
        #: names the topic: then its handler gets the payload, in the read loop (it must not block).
        self.inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.handlers: dict[str, Callable[[bytes], None]] = {}

    async def connect(self, will: tuple[str, bytes] | None = None, timeout: float = 10.0) -> None:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), timeout)
        self._reader, self._writer = reader, writer
        # Clean session: a device keeps its own outbox, not the broker's.
        writer.write(mqtt_codec.connect(self.client_id, keepalive=self.keepalive, clean=True, will=will))
        await writer.drain()
        try:
            first, body = await asyncio.wait_for(mqtt_codec.read_packet(reader), timeout)
        except asyncio.IncompleteReadError:  # the broker went away before its CONNACK (a node killed)
            writer.close()
            raise ConnectionError(f"{self.host}:{self.port} closed the connection before CONNACK") from None
        code = mqtt_codec.parse_connack(body)[1] if first >> 4 == PacketType.CONNACK else None
        if code != 0:
            writer.close()
            raise MqttRefusedError(f"CONNACK return code {code}")
        self._read_task = asyncio.create_task(self._read_loop())

    async def _read_loop(self) -> None:
        assert self._reader is not None
        assert self._writer is not None
        try:
            while True:
                first, body = await mqtt_codec.read_packet(self._reader)
                if first >> 4 == PacketType.PUBACK:
                    fut = self._pending.pop(mqtt_codec.parse_packet_id(body), None)
                    if fut is not None and not fut.done():
                        fut.set_result(None)
                elif first >> 4 == PacketType.PUBLISH:  # to one of our subscriptions
                    topic, qos, packet_id, payload = mqtt_codec.parse_publish(first, body, 0, len(body))
                    if qos:
                        self._writer.write(mqtt_codec.puback(packet_id))
                    handler = self.handlers.get(topic)
                    if handler is not None:
                        handler(payload)
                    else:
                        self.inbox.put_nowait((topic, payload))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection lost before PUBACK"))
            self._pending.clear()

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Send; with QoS 1, return once the broker has acknowledged (raises if the link drops)."""
        assert self._writer is not None
        if not self.alive:  # the read loop has ended: no PUBACK could ever be matched
            raise ConnectionError(f"connection to {self.host}:{self.port} lost")
        fut: asyncio.Future[None] | None = None
        packet_id = 0
        if qos:
            packet_id = self._next_packet_id()
            fut = asyncio.get_running_loop().create_future()
            self._pending[packet_id] = fut
        self._writer.write(mqtt_codec.publish(topic, payload, qos=qos, packet_id=packet_id, retain=retain))
        await self._writer.drain()
        if fut is not None:
            await asyncio.wait_for(fut, 30)

    @property
    def alive(self) -> bool:
        """Connected, and the broker has not closed the connection."""
        return self._read_task is not None and not self._read_task.done()

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe (the SUBACK is not awaited: messages simply start to arrive)."""
        assert self._writer is not None
        self._writer.write(mqtt_codec.subscribe(self._next_packet_id(), [topic], qos))
        await self._writer.drain()

    def _next_packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    async def ping(self) -> None:
        assert self._writer is not None
        self._writer.write(mqtt_codec.PINGREQ)
        await self._writer.drain()

    async def close(self, clean: bool = True) -> None:
        if self._writer is not None:
            with contextlib.suppress(ConnectionError, OSError):
                if clean:
                    self._writer.write(mqtt_codec.disconnect())
                    await self._writer.drain()
                self._writer.close()
        if self._read_task is not None:
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._read_task


@dataclass(frozen=True, slots=True)
class SimOptions:
    devices: int = 100
    duration_s: float = 60.0
    host: str = "127.0.0.1"
    port: int = 1883
    site: str = "sim"
    zones: int = 2
    window_s: int = 10
    heartbeat_s: float = 30.0
    storm_at_s: float | None = None
    #: Further broker addresses (the other nodes of a NATS cluster): after a lost or refused
    #: connection a device tries the next address in turn, as an agent's link does.
    failover: tuple[tuple[str, int], ...] = ()
    connect_rate: float = 500.0  # new connections per second while ramping up
    #: Answer OTA campaign commands as a device would (install takes ota_install_s; a target whose
    #: name contains "bad" fails its smoke test on every device).
    ota: bool = False
    ota_install_s: float = 2.0
    #: Keep each event until the hub's receipt names it and send it again when none comes (the hub
    #: always sends receipts); off against a bare broker with no hub, where the PUBACK is the end.
    receipts: bool = True
    resend_after_s: float = 10.0  # first wait for a receipt; doubles while none comes
    drain_s: float = 30.0  # after the run, how long a device waits for its last receipts


@dataclass
class FleetResult:
    """What the fleet produced, the broker acknowledged and the hub receipted."""

    connected: int = 0
    events_produced: int = 0
    events_acked: int = 0  # distinct events the broker acknowledged at least once
    events_failed: int = 0  # publishes whose connection dropped before the PUBACK
    events_resent: int = 0  # published again because no receipt came in time (same id)
    events_receipted: int = 0  # distinct events the hub's receipts named
    unreceipted: int = 0  # at the end: events no receipt named (nor, without receipts, PUBACK)
    heartbeats: int = 0
    reconnects: int = 0
    moved: int = 0  # devices whose last connection was to a failover address, not their first
    connect_failures: int = 0
    elapsed_s: float = 0.0
    event_ids: set[str] = field(default_factory=set)  # every event produced
    ota_installed: int = 0
    ota_failed: int = 0


@dataclass(slots=True)
class _Entry:
    payload: bytes
    sent_at: float | None = None  # when the broker last acknowledged it; None: to (re)send now
    acked: bool = False


class Unreceipted:
    """One device's events not yet receipted by the hub, oldest first: an outbox in memory (no I/O).

    Bytes, not models, per event (a few hundred bytes): a fleet of 10,000 devices holds a window or
    two each. The wait before a resend doubles, up to :data:`MAX_RESEND_WAIT_S`, while receipts stay
    away (a hub down is not met with a resend storm) and starts again at the next receipt.
    """

    def __init__(self, resend_after_s: float) -> None:
        self.resend_after_s = resend_after_s
        self._wait = resend_after_s
        self._items: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, event_id: str, payload: bytes) -> None:
        self._items[event_id] = _Entry(payload)

    def due(self, now: float) -> list[tuple[str, bytes, bool]]:
        """(id, payload, overdue) to publish now: never acknowledged by the broker, or receipt overdue."""
        cutoff = now - self._wait
        out = [(i, e.payload, e.sent_at is not None) for i, e in self._items.items()
               if e.sent_at is None or e.sent_at <= cutoff]  # fmt: skip
        if any(overdue for _, _, overdue in out):
            self._wait = min(self._wait * 2, MAX_RESEND_WAIT_S)
        return out

    def acked(self, event_id: str, now: float) -> bool:
        """The broker acknowledged it; True the first time for this event."""
        entry = self._items.get(event_id)
        if entry is None:  # receipted while its PUBACK was on the way
            return False
        first = not entry.acked
        entry.sent_at, entry.acked = now, True
        return first

    def failed(self, event_id: str) -> None:
        """Its connection dropped before the PUBACK: send it again as soon as there is one."""
        if (entry := self._items.get(event_id)) is not None:
            entry.sent_at = None

    def confirm(self, ids: Iterable[str]) -> int:
        """Forget the events a receipt names; how many of them were still here."""
        removed = sum(self._items.pop(i, None) is not None for i in ids)
        if removed:
            self._wait = self.resend_after_s  # the hub is there: resend promptly next time
        return removed


def _suppressed(n: int, k: int = 3) -> int | str:
    """A count as a device with k = 3 sends it (the hub refuses events counted with a smaller k)."""
    return n if n == 0 or n >= k else f"<{k}"


async def _device(i: int, opts: SimOptions, result: FleetResult, start: float, storm: asyncio.Event) -> None:
    device = f"dev-{i:05d}"
    rng = random.Random(i)
    topic_event = wire.topic(opts.site, device, wire.Channel.EVENT)
    topic_beat = wire.topic(opts.site, device, wire.Channel.HEARTBEAT)
    topic_status = wire.topic(opts.site, device, wire.Channel.STATUS)
    topic_receipt = wire.topic(opts.site, device, wire.Channel.RECEIPT)
    offline = wire.encode(wire.Status(site=opts.site, device=device, ts=int(time.time()), state="offline"))
    pending = Unreceipted(opts.resend_after_s)

    def on_receipt(payload: bytes) -> None:
        try:
            receipt = wire.decode(payload, wire.Channel.RECEIPT)
        except WireError:
            return
        if isinstance(receipt, wire.Receipt) and (receipt.site, receipt.device) == (opts.site, device):
            result.events_receipted += pending.confirm(receipt.ids)

    async def flush(client: MiniMqtt) -> None:
        """Publish what is due: new events, and those whose receipt is overdue (same id)."""
        for event_id, payload, again in pending.due(time.monotonic()):
            result.events_resent += again
            try:
                await client.publish(topic_event, payload, qos=1)
            except (ConnectionError, TimeoutError):
                result.events_failed += 1
                pending.failed(event_id)
                raise
            if pending.acked(event_id, time.monotonic()):
                result.events_acked += 1
            if not opts.receipts:
                pending.confirm([event_id])

    await asyncio.sleep(i / opts.connect_rate)  # ramp up, as a real fleet does after an outage
    deadline = start + opts.duration_s
    deadline_wall = time.time() + deadline - time.monotonic()
    last_window = wire.coarsen(time.time(), opts.window_s) - opts.window_s  # closed before this start

    def produce() -> None:
        """Every window closed since the last call and before the deadline, connected or not (a camera
        keeps counting while its broker is away; its events wait in ``pending``)."""
        nonlocal last_window
        closed = wire.coarsen(min(time.time(), deadline_wall), opts.window_s) - opts.window_s
        for window in range(last_window + opts.window_s, closed + 1, opts.window_s):
            for z in range(opts.zones):
                e = wire.ZoneCountEvent(
                    site=opts.site, device=device, zone=f"z{z}", id=wire.new_event_id(window),
                    window_start=window, window_s=opts.window_s, frames=opts.window_s * 5,
                    counts={"person": _suppressed(rng.randint(0, 20))}, mean_counts={}, k=3,
                    model="ssd-mobilenet-v2-coco-quant@1.0.0",
                )  # fmt: skip
                pending.add(e.id, wire.encode(e))
                result.events_produced += 1
                result.event_ids.add(e.id)
        last_window = max(last_window, closed)

    def running() -> bool:
        produce()
        # Past the deadline only to deliver what is left, for at most drain_s.
        now = time.monotonic()
        return now < deadline or (len(pending) > 0 and now < deadline + opts.drain_s)

    first = True
    next_beat = time.monotonic() + rng.uniform(0, opts.heartbeat_s)
    addresses = [(opts.host, opts.port), *opts.failover]
    at = 0  # index in addresses
    while running():
        client = MiniMqtt(*addresses[at], f"vigie-{opts.site}-{device}")
        if opts.receipts:
            client.handlers[topic_receipt] = on_receipt
        try:
            await client.connect(will=(topic_status, offline))
        except (OSError, TimeoutError, MqttRefusedError):
            result.connect_failures += 1
            at = (at + 1) % len(addresses)
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            continue
        if first:
            result.connected += 1
            first = False
        else:
            result.reconnects += 1
        ota_task: asyncio.Task[None] | None = None
        try:
            if opts.receipts:  # clean session: subscribe on every connection
                await client.subscribe(topic_receipt, qos=wire.QOS[wire.Channel.RECEIPT])
            online = wire.Status(site=opts.site, device=device, ts=int(time.time()), state="online")
            await client.publish(topic_status, wire.encode(online), qos=1, retain=True)
            if opts.ota:
                await client.subscribe(wire.topic(opts.site, device, wire.Channel.OTA), qos=1)
                ota_task = asyncio.create_task(_ota_device(client, opts, device, rng, result))
            while running() and not storm.is_set() and client.alive:
                now = time.time()
                producing = time.monotonic() < deadline
                await flush(client)
                if producing and time.monotonic() >= next_beat:
                    next_beat += opts.heartbeat_s
                    beat = wire.Heartbeat(
                        site=opts.site, device=device, ts=wire.coarsen(now, wire.HEARTBEAT_GRANULARITY_S),
                        agent_version=__version__, model="ssd-mobilenet-v2-coco-quant@1.0.0",
                        uptime_s=int(time.monotonic() - start), fps=5.0, inference_p50_ms=17.0,
                        inference_p95_ms=21.0, cpu_percent=60.0, rss_mb=120.0, disk_free_mb=9000.0,
                        cpu_temp_c=55.0, outbox_depth=len(pending), outbox_dropped=0,
                    )  # fmt: skip
                    await client.publish(topic_beat, wire.encode(beat), qos=0)
                    result.heartbeats += 1
                # Draining, look often: the device leaves as soon as its last receipt is in.
                await asyncio.sleep(min(1.0, max(0.05, deadline - time.monotonic())) if producing else 0.2)
        except (ConnectionError, TimeoutError, OSError):
            pass
        finally:
            if ota_task is not None:
                ota_task.cancel()
            await client.close(clean=not storm.is_set())
        if not storm.is_set() and running():  # lost, not dropped on purpose: try the next node
            at = (at + 1) % len(addresses)
            await asyncio.sleep(rng.uniform(0.1, 1.0))
        if storm.is_set():
            # A reconnect storm: everyone drops at once and comes back within a few seconds.
            await asyncio.sleep(rng.uniform(0.1, 3.0))
            while storm.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
    result.unreceipted += len(pending)
    result.moved += at != 0


async def _ota_device(
    client: MiniMqtt, opts: SimOptions, device: str, rng: random.Random, result: FleetResult
) -> None:
    """A simulated device's OTA side: received, the update's steps, then installed or failed."""
    model = "ssd-coco@1.0.0"
    topic = wire.topic(opts.site, device, wire.Channel.OTA_STATE)
    while True:
        _, payload = await client.inbox.get()
        try:
            command = wire.decode(payload, wire.Channel.OTA)
        except WireError:
            continue
        if not isinstance(command, wire.OtaCommand):
            continue

        async def report(step: str, campaign: str = command.campaign, **fields: object) -> None:
            state = wire.OtaState.model_validate(
                {
                    "site": opts.site,
                    "device": device,
                    "ts": int(time.time()),
                    "campaign": campaign,
                    "step": step,
                    **fields,
                }
            )
            await client.publish(topic, wire.encode(state), qos=1, retain=True)

        await report("received", model=model)
        if command.action == "rollback":
            model = "ssd-coco@1.0.0"
            await report("rolled_back", model=model, reason="asked by the hub")
            continue
        for step in ("download", "unpack", "smoke"):
            await asyncio.sleep(opts.ota_install_s * rng.uniform(0.1, 0.4))
            await report(step)
        if "bad" in command.target:
            result.ota_failed += 1
            await report("failed", model=model, reason="smoke test: the model does not load")
            continue
        model = f"ssd-coco@{command.version}"
        result.ota_installed += 1
        await report("installed", model=model, latency_ms=round(rng.uniform(15, 25), 1))


async def _fleet(opts: SimOptions) -> FleetResult:
    result = FleetResult()
    storm = asyncio.Event()
    start = time.monotonic()

    async def storm_timer() -> None:
        if opts.storm_at_s is None:
            return
        await asyncio.sleep(opts.storm_at_s)
        storm.set()
        await asyncio.sleep(1.0)
        storm.clear()

    await asyncio.gather(
        storm_timer(), *(_device(i, opts, result, start, storm) for i in range(opts.devices))
    )
    result.elapsed_s = time.monotonic() - start
    return result


def run_fleet(opts: SimOptions) -> FleetResult:
    """Run the fleet to completion (blocking)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < opts.devices + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, opts.devices + 1024), hard))
    return asyncio.run(_fleet(opts))
