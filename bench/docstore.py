#!/usr/bin/env python3
"""TinyDB insert cost by collection size: its default JSON storage vs the project's SQLite storage.

Both rewrite the table on each write (TinyDB's storage interface hands over the
whole database), so both grow linearly: the SQLite storage buys atomic,
crash-safe writes, not scale. Hence TinyDB only for small collections.

    .venv/bin/python bench/docstore.py
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable

from tinydb import TinyDB

from hub.docstore import open_documents


def per_insert_ms(make: Callable[[str], TinyDB], preload: int, inserts: int = 20) -> float:
    folder = tempfile.mkdtemp()
    table = make(folder).table("devices")
    table.insert_multiple(
        {"site": "s", "device": f"cam-{i}", "profile": "rpi5", "tags": ["a", "b"]} for i in range(preload)
    )
    t0 = time.perf_counter()
    for i in range(inserts):
        table.insert({"site": "s", "device": f"new-{i}", "profile": "rpi5", "tags": []})
    return (time.perf_counter() - t0) / inserts * 1000


def main() -> None:
    for n in (0, 2000, 5000, 20000):
        json_ms = per_insert_ms(lambda d: TinyDB(os.path.join(d, "db.json")), n)
        sqlite_ms = per_insert_ms(lambda d: open_documents(os.path.join(d, "db.sqlite")), n)
        print(f"{n:>6} documents: JSON storage {json_ms:7.2f} ms/insert, "
              f"SQLite storage {sqlite_ms:7.2f} ms/insert  (ratio {sqlite_ms / json_ms:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
