"""TinyDB on the project's SQLite storage: queries, persistence, atomic writes across a crash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tinydb import Query

from hub.docstore import open_documents


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
