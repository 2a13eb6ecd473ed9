"""Analysts' reads on a PostgreSQL standby: a store whose every transaction is read-only.

The hub writes on the primary (``db``); the routes that only read take this store when ``read_db``
is set. It never migrates (a standby cannot, and the primary's migrations reach it by replication):
it checks that the schema it finds is the one this hub's code expects.
"""

from __future__ import annotations

import time

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from hub.storage.pooler import split_options
from hub.storage.postgres import PostgresStore, redact
from hub.storage.sqlite import Migration
from vigie.exceptions import VigieError

__all__ = ["ReadOnlyPostgresStore", "check_reachable", "read_only_dsn"]

_READ_ONLY = "-c default_transaction_read_only=on"


def read_only_dsn(dsn: str) -> str:
    """``dsn`` with every transaction read-only by default (options kept), as key=value conninfo."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise VigieError(f"read database DSN {dsn!r} cannot be parsed: {exc}") from None
    options = str(params.get("options") or "")
    if "default_transaction_read_only" not in options:
        params["options"] = f"{options} {_READ_ONLY}".strip()
    return make_conninfo("", **params)


def check_reachable(dsn: str, *, pooler: str = "none") -> None:
    """Connect once and leave: ``vigie hub serve`` says at start that a read database is unreachable.

    Raises:
        VigieError: naming the DSN (without its password), libpq's reason and the setting to fix.
    """
    if pooler != "none":  # PgBouncer refuses the options start-up parameter (pooler.py)
        dsn = split_options(dsn).dsn
    try:
        psycopg.connect(dsn, connect_timeout=10).close()
    except psycopg.OperationalError as exc:
        raise VigieError(
            f"cannot connect to PostgreSQL at {redact(dsn)!r} (VIGIE_HUB_READ_DB / read_db): {exc}".strip()
        ) from None


class ReadOnlyPostgresStore(PostgresStore):
    """A :class:`PostgresStore` on a standby (or any node), opened read-only, never migrated."""

    def __init__(
        self, dsn: str, *, schema: str | None = None, wait_s: float = 10.0, pooler: str = "none"
    ) -> None:
        self._wait_s = wait_s
        self._given_dsn = dsn
        # Behind PgBouncer the read-only option becomes BEGIN READ ONLY on every transaction.
        super().__init__(read_only_dsn(dsn), schema=schema, pooler=pooler)

    def _migrate(self, migrations: list[tuple[int, list[Migration]]]) -> None:
        """Wait (``wait_s``) for replication to bring the primary's latest schema, or say what is wrong."""
        need = max(version for version, _ in migrations)
        deadline = time.monotonic() + self._wait_s
        found: int | None = None
        while True:
            try:
                row = self._query("SELECT max(version) FROM schema_version")
                found = int(row[0][0]) if row and row[0][0] is not None else 0
            except psycopg.errors.UndefinedTable:
                found = None
            if found is not None and found >= need:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        what = "no Vigie schema" if found is None else f"schema version {found}"
        raise VigieError(
            f"read database {redact(self._given_dsn)!r} has {what}; this hub needs version {need}: point "
            "VIGIE_HUB_READ_DB at a standby replicating the primary in VIGIE_HUB_DB (which migrates it at "
            "the hub's start), or unset it to read from the primary"
        )
