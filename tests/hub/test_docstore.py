"""TinyDB on the project's SQLite storage: persistence, atomic writes across a crash and across writers."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tinydb import Query

from hub.docstore import StaleWriteError, open_documents, transaction


def test_documents_persist_and_query(tmp_path: Path) -> None:
    db = open_documents(tmp_path / "registry.sqlite")
    devices = db.table("devices")
    devices.insert_multiple([
        {"site": "vieux-port", "device": "cam-1", "profile": "rpi5", "tags": ["port"]},
        {"site": "vieux-port", "device": "cam-2", "profile": "rpi4", "tags": []},
        {"site": "noailles", "device": "cam-1", "profile": "rpi5", "tags": ["market"]},
    ])  # fmt: skip
    db.table("models").insert({"id": "ssd", "version": "1.0.0"})
    devices.update({"profile": "rpi5"}, (Query().site == "vieux-port") & (Query().device == "cam-2"))
    db.close()
    again = open_documents(tmp_path / "registry.sqlite")
    assert len(again.table("devices").search(Query().profile == "rpi5")) == 3
    assert again.table("models").all() == [{"id": "ssd", "version": "1.0.0"}]
    again.drop_table("models")
    again.close()
    assert "models" not in open_documents(tmp_path / "registry.sqlite").tables()


def test_a_killed_writer_leaves_whole_documents(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    code = (
        "import os, signal\n"
        "from hub.docstore import open_documents\n"
        f"db = open_documents({str(path)!r})\n"
        "t = db.table('devices')\n"
        "for i in range(300):\n"
        "    t.insert({'device': f'cam-{i}', 'profile': 'rpi5'})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == -9
    docs = open_documents(path).table("devices").all()
    assert [d["device"] for d in docs] == [f"cam-{i}" for i in range(300)]


def test_a_read_modify_write_is_not_overwritten_by_another_writer(tmp_path: Path) -> None:
    """Two connections (as two processes would be): the second writer waits for the first's transaction."""
    path = tmp_path / "campaigns.sqlite"
    first, second = open_documents(path), open_documents(path)
    first.table("c").insert({"id": "c1", "state": "running", "wave": 0})
    inside, written = threading.Event(), threading.Event()

    def slow_step() -> None:
        with transaction(first):
            doc = first.table("c").get(Query().id == "c1")
            assert doc is not None
            inside.set()
            time.sleep(0.5)  # the other writer comes now
            first.table("c").update({"wave": doc["wave"] + 1}, Query().id == "c1")
        written.set()

    thread = threading.Thread(target=slow_step)
    thread.start()
    assert inside.wait(5)
    with transaction(second):
        second.table("c").update({"state": "paused"}, Query().id == "c1")
    assert written.is_set()  # it waited for the first transaction to commit
    thread.join()
    assert open_documents(path).table("c").all() == [{"id": "c1", "state": "paused", "wave": 1}]

    # Without a transaction the second writer's read is stale by the time it may write:
    # refused, rather than silently undoing the first writer's step.
    inside.clear()
    thread = threading.Thread(target=slow_step)
    thread.start()
    assert inside.wait(5)
    with pytest.raises(StaleWriteError, match="transaction"):
        second.table("c").update({"state": "running"}, Query().id == "c1")
    thread.join()
    assert open_documents(path).table("c").all() == [{"id": "c1", "state": "paused", "wave": 2}]


def test_a_failed_transaction_writes_nothing(tmp_path: Path) -> None:
    db = open_documents(tmp_path / "d.sqlite")
    db.table("c").insert({"id": "c1", "n": 0})

    def fails_half_way() -> None:
        with transaction(db):
            db.table("c").update({"n": 1})
            raise RuntimeError("half-way")

    with pytest.raises(RuntimeError):
        fails_half_way()
    assert db.table("c").all() == [{"id": "c1", "n": 0}]
    db.table("c").update({"n": 2})
    assert open_documents(tmp_path / "d.sqlite").table("c").all() == [{"id": "c1", "n": 2}]
