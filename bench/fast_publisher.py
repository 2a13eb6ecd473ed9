"""Publishers that outrun the hub: pre-encoded QoS 1 PUBLISH frames written straight to a socket.

A paho publisher spends ~70 µs of Python per message, so four of them top out near 13-14k msg/s
here, below what Mosquitto delivers (27-35k msg/s from C publishers to a C subscriber). An ingest
benchmark fed by them measures the publishers, not the hub. These publishers encode every frame
before the start signal with the project's own MQTT codec, then write them in batches and read the
PUBACKs back, keeping at most ``window`` unacknowledged: per message they cost a slice of a
``sendall`` and a 4-byte read, so the broker and the hub are what is left to measure.
"""

from __future__ import annotations

import multiprocessing as mp
import socket
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from vigie import mqtt_codec as codec
from vigie import wire

__all__ = ["bench_events", "publish_frames", "start_publishers"]

_BATCH = 256


def bench_events(index: int, count: int) -> list[tuple[str, bytes]]:
    """``count`` distinct, valid events (k = 3, the hub's minimum) for publisher ``index``."""
    base = 1_790_000_000
    out = []
    for i in range(count):
        device = f"cam-{index}-{i % 50}"
        ts = base + 10 * (i // 50)
        e = wire.ZoneCountEvent(
            site="bench", device=device, zone="z0", id=wire.new_event_id(ts), window_start=ts, window_s=10,
            # k = 3, the hub's minimum (a smaller k is quarantined, never stored): counts 0 or >= 3.
            frames=50, counts={"person": 3 + i % 17, "car": 3 + i % 5}, mean_counts={}, k=3, model="m@1",
        )  # fmt: skip
        out.append((wire.topic("bench", device, wire.Channel.EVENT), wire.encode(e)))
    return out


def _read_acks(sock: socket.socket, buf: bytearray) -> int:
    """Read what the broker sent; return how many PUBACKs it held (the rest stays in ``buf``)."""
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("the broker closed the connection")
    buf += chunk
    acks, pos = 0, 0
    while (found := codec.next_frame(buf, pos)) is not None:
        _, end = found
        if buf[pos] >> 4 == codec.PacketType.PUBACK:
            acks += 1
        pos = end
    del buf[:pos]
    return acks


def publish_frames(port: int, messages: Sequence[tuple[str, bytes]], *, window: int = 2000) -> None:
    """Publish ``messages`` with QoS 1 over one MQTT 3.1.1 connection; return when all are acknowledged."""
    frames = [
        codec.publish(topic, payload, qos=1, packet_id=1 + i % 65_000)
        for i, (topic, payload) in enumerate(messages)
    ]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(codec.connect(f"bench-fast-{uuid.uuid4().hex[:8]}", keepalive=60))
        buf = bytearray()
        while (connack := codec.next_frame(buf, 0)) is None:
            buf += sock.recv(4096)
        del buf[: connack[1]]
        sent = acked = 0
        while acked < len(frames):
            if sent < len(frames) and sent - acked < window:
                batch = frames[sent : sent + _BATCH]
                sock.sendall(b"".join(batch))
                sent += len(batch)
            else:
                acked += _read_acks(sock, buf)
        sock.sendall(codec.disconnect())


def _run(port: int, index: int, count: int, ready: Any, go: Any) -> None:
    messages = bench_events(index, count)
    ready.wait()
    go.wait()
    publish_frames(port, messages)


def start_publishers(port: int, total: int, n: int) -> tuple[list[Any], Callable[[], None]]:
    """Fork ``n`` publishers sharing ``total`` events; they encode, then wait for the returned ``go()``."""
    ctx = mp.get_context("fork")
    ready, go = ctx.Barrier(n + 1), ctx.Event()
    procs = [ctx.Process(target=_run, args=(port, i, total // n, ready, go)) for i in range(n)]
    for p in procs:
        p.start()
    ready.wait()
    return procs, go.set
