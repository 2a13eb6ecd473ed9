"""The durable outbox: order, acks, and survival across a process crash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edge.outbox import Outbox


def test_fifo_peek_exclude_and_ack(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    box.put_many((f"t/{i}", bytes([i]), 1) for i in range(5))
    first = box.peek(2)
    assert [i.topic for i in first] == ["t/0", "t/1"]
    assert [i.topic for i in box.peek(2, exclude=[first[0].rowid])] == ["t/1", "t/2"]
    box.ack([first[0].rowid])
    assert box.depth() == 4
    assert box.peek(0) == []


def test_rows_survive_a_killed_writer(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    # A child writes 200 rows and is killed with SIGKILL right after: all committed rows remain.
    code = (
        "import os, signal, sys\n"
        "from edge.outbox import Outbox\n"
        f"box = Outbox({str(path)!r})\n"
        "for i in range(200):\n"
        "    box.put('t', i.to_bytes(2, 'big'), 1)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False)
    assert proc.returncode == -9
    box = Outbox(path)
    items = box.peek(1000)
    assert [int.from_bytes(i.payload, "big") for i in items] == list(range(200))


def test_quota_drops_oldest_first_and_counts_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    box = Outbox(path, quota_bytes=20_000)
    box.put_many((f"t/{i}", bytes(200), 1) for i in range(300))
    kept = box.peek(1000)
    assert 0 < len(kept) < 300
    assert kept[-1].topic == "t/299"  # the newest survive
    assert kept[0].topic == f"t/{300 - len(kept)}"  # a contiguous tail: oldest dropped first
    assert box.dropped() == 300 - len(kept)
    box.close()
    again = Outbox(path, quota_bytes=20_000)
    assert again.dropped() == 300 - len(kept)
    again.put("t/300", bytes(200), 1)
    assert again.dropped() == 300 - len(kept) + 1
