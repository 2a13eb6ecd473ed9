"""Is an acknowledged event safe from the loss of the PostgreSQL primary? (docs/scaling.md)

The ingest sends receipts after its commit returns; the commit implies a second copy only when the
primary waits for a synchronous standby: ``synchronous_standby_names`` names it and
``synchronous_commit`` is ``on`` (the standby flushed the commit), ``remote_apply`` (replayed it)
or ``remote_write`` (received it, in its memory).
"""

from __future__ import annotations

from hub.storage.base import Store

__all__ = ["durability_warning", "primary_durability"]

_WAITS_FOR_STANDBY = {"on", "remote_apply", "remote_write"}


def durability_warning(synchronous_commit: str, standby_names: str) -> str | None:
    """Why a receipt may outlive the event when the primary is lost, or None when it cannot (pure)."""
    if not standby_names.strip():
        return (
            "PostgreSQL has no synchronous standby (synchronous_standby_names is empty): an event "
            "receipted to a device lives only on the primary until replicated, and a failover can lose "
            "it; set synchronous_standby_names on the primary (docs/scaling.md)"
        )
    if synchronous_commit not in _WAITS_FOR_STANDBY:
        return (
            f"PostgreSQL synchronous_commit is {synchronous_commit!r}: commits do not wait for the "
            "synchronous standby, so a failover can lose receipted events; set it to 'on' (docs/scaling.md)"
        )
    return None


def primary_durability(store: Store) -> str | None:
    """:func:`durability_warning` for the server behind ``store`` (PostgreSQL only; else None)."""
    from hub.storage.postgres import PostgresStore

    if not isinstance(store, PostgresStore):
        return None
    return durability_warning(
        store.server_setting("synchronous_commit"), store.server_setting("synchronous_standby_names")
    )
