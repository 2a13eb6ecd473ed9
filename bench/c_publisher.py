"""Publishers in C: Mosquitto's own ``mosquitto_pub -l``, one process per device, fed a file of events.

Python publishers, even pre-encoded ones (bench/fast_publisher.py), spend Python time per message;
``mosquitto_pub -l`` reads stdin and publishes one message per line, so a benchmark fed by it
measures the broker and the hub, not the publishers. Each process publishes to one topic, hence
is one device (``vigie/v1/bench/c<index>/event``), and gets a file of pre-encoded events.

A line is read with ``fgets`` and measured with ``strlen``: a payload holding a newline (0x0a)
would be cut in two, one holding a NUL (0x00) would be truncated. The wire format stays as it is;
the field values are chosen so that no encoded event holds either byte (``window_s`` = 60, not 10
which packs as 0x0a; counts 3-9; window starts whose four bytes hold neither), and it is asserted.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from vigie import wire

__all__ = ["BAD_BYTES", "MosquittoPublishers", "line_events", "write_inputs"]

#: Bytes ``mosquitto_pub -l`` cannot carry inside a line: the line end, and the C string end.
BAD_BYTES = (b"\n", b"\x00")
_WINDOW_S = 60
_BASE_TS = 1_790_000_040  # a multiple of 60, in 2026


def _clean(payload: bytes) -> bool:
    return not any(b in payload for b in BAD_BYTES)


def line_events(index: int, count: int) -> tuple[str, list[bytes]]:
    """The topic and ``count`` distinct, valid events (k = 3, the hub's minimum) of device ``c<index>``."""
    device = f"c{index}"
    payloads: list[bytes] = []
    ts = _BASE_TS
    skipped = 0
    while len(payloads) < count:
        i = len(payloads)
        e = wire.ZoneCountEvent(
            site="bench", device=device, zone="z0", id=wire.new_event_id(ts), window_start=ts,
            window_s=_WINDOW_S, frames=50, counts={"person": 3 + i % 7, "car": 3 + i % 5},
            mean_counts={}, k=3, model="m@1",
        )  # fmt: skip
        payload = wire.encode(e)
        ts += _WINDOW_S
        if _clean(payload):  # else the window start packed a 0x00 or 0x0a: take the next window
            payloads.append(payload)
            skipped = 0
        elif (skipped := skipped + 1) > 1000:  # a changed wire format could pack one in every event
            raise ValueError(
                f"device {device}: 1000 events in a row hold a newline or NUL (last {payload!r}): "
                "mosquitto_pub -l would cut them; choose other field values in bench/c_publisher.py"
            )
    assert not [p for p in payloads if not _clean(p)]
    return wire.topic("bench", device, wire.Channel.EVENT), payloads


def write_inputs(folder: Path, total: int, processes: int) -> list[tuple[str, Path]]:
    """One stdin file per publisher process, ``total // processes`` events each: (topic, file)."""
    folder.mkdir(parents=True, exist_ok=True)
    inputs = []
    for index in range(processes):
        topic, payloads = line_events(index, total // processes)
        path = folder / f"c{index}.lines"
        path.write_bytes(b"".join(p + b"\n" for p in payloads))
        inputs.append((topic, path))
    return inputs


class MosquittoPublishers:
    """``mosquitto_pub -l -q 1`` processes, one per input file, started together by :meth:`go`."""

    def __init__(self, port: int, inputs: list[tuple[str, Path]], *, max_inflight: int = 1000) -> None:
        binary = shutil.which("mosquitto_pub")
        if binary is None:
            raise SystemExit(
                "mosquitto_pub not found: install mosquitto-clients (apt-get install mosquitto-clients)"
            )
        self._commands = [
            ([binary, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-l", "-M", str(max_inflight),
              "-i", f"bench-cpub-{i}", "-t", topic], path)
            for i, (topic, path) in enumerate(inputs)
        ]  # fmt: skip
        self._procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def go(self) -> None:
        for command, path in self._commands:
            with path.open("rb") as stdin:
                proc = subprocess.Popen(
                    command, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
                )
            self._procs.append((proc, path))

    def done(self) -> bool:
        return all(p.poll() is not None for p, _ in self._procs)

    def join(self, timeout: float) -> None:
        """Wait until every publisher has exited, or fail naming the one that did not, or failed."""
        deadline = time.monotonic() + timeout
        for proc, path in self._procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill()
                raise SystemExit(
                    f"mosquitto_pub < {path.name} still running after {timeout:.0f} s: killed"
                ) from None
            if proc.returncode != 0:
                err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                raise SystemExit(
                    f"mosquitto_pub < {path.name} exited with {proc.returncode}: {err or 'no message'}"
                )

    def kill(self) -> None:
        for proc, _ in self._procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
