"""Storage backends behind one interface: SQLite (embedded default) and PostgreSQL (production)."""

from __future__ import annotations

from pathlib import Path

from hub.storage.base import CubeQuery, CubeRow, EventQuery, QuarantineRecord, Retention, RollupQuery, Store
from hub.storage.sqlite import SQLiteStore

__all__ = [
    "CubeQuery",
    "CubeRow",
    "EventQuery",
    "QuarantineRecord",
    "Retention",
    "RollupQuery",
    "SQLiteStore",
    "Store",
    "open_store",
]


def open_store(url: str | Path) -> Store:
    """``postgresql://…`` (or ``postgres://…``) opens PostgreSQL; anything else is a SQLite file."""
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        from hub.storage.postgres import PostgresStore

        return PostgresStore(text)
    return SQLiteStore(text.removeprefix("sqlite:///"))
