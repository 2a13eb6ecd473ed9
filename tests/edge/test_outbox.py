"""The durable outbox: order, acks, and survival across a process crash."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.outbox import Outbox
from tests.conftest import IN_CI


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


def test_sent_rows_wait_for_the_receipt_and_are_resent_when_none_comes(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    box = Outbox(path)
    box.put_many([("t/e", b"a", 1, "id-a"), ("t/e", b"b", 1, "id-b"), ("t/status", b"s", 1)])
    rows = box.peek(10)
    box.mark_sent([r.rowid for r in rows], at=100.0)
    # The status row (no id) is gone with the broker's ack; the events wait for the hub.
    assert box.depth() == 2
    assert box.awaiting_receipt() == 2
    assert box.peek(10, resend_before=99.0) == []  # not due yet
    due = box.peek(10, resend_before=131.0)
    assert [(r.msg_id, r.sent) for r in due] == [("id-a", 100.0), ("id-b", 100.0)]
    assert box.confirm(["id-a", "unknown"]) == 1
    assert [r.msg_id for r in box.peek(10, resend_before=131.0)] == ["id-b"]
    box.close()
    # After a restart nothing counts as sent (its clock was another process's): all go again.
    again = Outbox(path)
    assert [(r.msg_id, r.sent) for r in again.peek(10)] == [("id-b", None)]
    assert again.produced() == 3


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. "1m") mounted at ``where``: a file system that really fills up."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("mounting a small tmpfs needs root under CI=true")
        pytest.skip("mounting a small tmpfs needs root")
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_keeps_events_in_memory_until_there_is_room(tmp_path: Path) -> None:
    with small_disk(tmp_path / "small", "1m") as mnt:
        box = Outbox(mnt / "o.sqlite", disk_reserve_bytes=0)
        filler = mnt / "filler"
        # Fill the file system to the last byte.
        with filler.open("wb", buffering=0) as fh, contextlib.suppress(OSError):
            while True:
                fh.write(bytes(4096))
        taken = sum(box.put_many([("t/e", bytes(300), 1, f"id-{i}")]) for i in range(50))
        assert taken == 50  # nothing raised to the agent
        assert box.depth() == 50  # in memory, not lost
        filler.unlink()
        box.put("t/e", bytes(300), 1, "id-50")
        assert box.depth() == 51
        assert [r.msg_id for r in box.peek(100)] == [f"id-{i}" for i in range(51)]
        assert box.dropped() == 0
        box.close()


def test_the_disk_reserve_drops_oldest_first_and_counts(tmp_path: Path) -> None:
    with small_disk(tmp_path / "small", "4m") as mnt:
        box = Outbox(mnt / "o.sqlite", disk_reserve_bytes=1_000_000)  # no quota: the disk is the limit
        for i in range(0, 8000, 100):
            box.put_many(("t/e", bytes(400), 1, f"id-{j}") for j in range(i, i + 100))
        kept = box.peek(10_000)
        assert 1000 < len(kept) < 8000
        assert kept[-1].msg_id == "id-7999"
        assert box.dropped() == 8000 - len(kept)
        st = os.statvfs(mnt)
        assert st.f_bavail * st.f_frsize > 500_000  # the reserve held
        box.close()
