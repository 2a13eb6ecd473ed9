"""Storage backends behind one interface: SQLite (embedded default) and PostgreSQL (production).

One module per domain (``events``, ``retention``, ``registry``, ``fusion``, ``access``, ``audit``,
``campaigns``, ``tags``), each a small protocol in ``base.py`` and a mixin of SQL; ``docs/storage.md``.
"""

from __future__ import annotations

from pathlib import Path

# The shapes and protocols are base.py's, re-exported whole: one list of names, kept there.
from hub.storage import base
from hub.storage.base import *  # noqa: F403
from hub.storage.base import Store
from hub.storage.sqlite import SQLiteStore

__all__ = [*base.__all__, "SQLiteStore", "open_read_store", "open_store"]


def open_store(url: str | Path, *, pooler: str = "none") -> Store:
    """``postgresql://…`` (or ``postgres://…``) opens PostgreSQL; anything else is a SQLite file.

    ``pooler="pgbouncer"``: ``url`` is a PgBouncer in transaction mode (``hub/storage/pooler.py``).
    """
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        from hub.storage.postgres import PostgresStore

        return PostgresStore(text, pooler=pooler)
    return SQLiteStore(text.removeprefix("sqlite:///"))


def open_read_store(url: str, *, pooler: str = "none") -> Store:
    """A read-only PostgreSQL store for analysts' routes (``read_db``): never migrated, schema checked."""
    from hub.storage.readonly import ReadOnlyPostgresStore

    return ReadOnlyPostgresStore(url, pooler=pooler)
