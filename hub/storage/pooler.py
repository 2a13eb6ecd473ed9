"""PostgreSQL behind PgBouncer in transaction mode (issue 22): what the store sends instead of session state.

PgBouncer in transaction mode lends a server connection for one transaction, then gives it to
another client. So nothing may outlive a transaction: not ``SET search_path`` (the schema), not the
``options`` start-up parameter (PgBouncer 1.18 refuses it), not a server-side prepared statement
(psycopg prepares a query run five times: the store connects with ``prepare_threshold=None``), not
``LISTEN`` (hub/live.py listens on ``live_db``, straight to PostgreSQL). What the DSN's ``options``
asked for is sent at the start of every transaction instead, with ``set_config(..., true)`` (that
transaction only), in the same round trip as its ``BEGIN``.
"""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from vigie.exceptions import VigieError

__all__ = ["POOLERS", "PooledDsn", "begin_statement", "split_options"]

#: The values of the hub's ``db_pooler`` setting.
POOLERS = ("none", "pgbouncer")

_TRUE = {"on", "true", "yes", "1"}


class PooledDsn:
    """A DSN without ``options``, and the settings those options made, for each transaction."""

    def __init__(self, dsn: str, settings: dict[str, str]) -> None:
        self.dsn = dsn
        self.settings = settings

    @property
    def read_only(self) -> bool:
        return self.settings.get("default_transaction_read_only", "off").lower() in _TRUE

    def schema(self) -> str | None:
        """The first schema of ``search_path`` (where the store's tables are), if one is named."""
        first = self.settings.get("search_path", "").split(",")[0].strip().strip('"')
        return first if first and first != "$user" else None


def _words(options: str) -> list[str]:
    """The server's split of ``options``: whitespace separates, a backslash keeps the next character."""
    words: list[str] = []
    word: list[str] | None = None
    escaped = False
    for char in options:
        if escaped:
            word = [*(word or []), char]
            escaped = False
        elif char == "\\":
            escaped, word = True, word or []
        elif char.isspace():
            if word is not None:
                words.append("".join(word))
            word = None
        else:
            word = [*(word or []), char]
    if word is not None:
        words.append("".join(word))
    return words


def split_options(dsn: str) -> PooledDsn:
    """``dsn`` less its ``options`` (``-c name=value`` pairs), and those pairs as settings.

    Raises:
        VigieError: the DSN does not parse, or its options hold something other than ``-c name=value``.
    """
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise VigieError(f"database DSN cannot be parsed: {exc}") from None
    options = str(params.pop("options", None) or "")
    settings: dict[str, str] = {}
    words = _words(options)
    i = 0
    while i < len(words):
        word = words[i]
        if word == "-c" and i + 1 < len(words):
            pair, i = words[i + 1], i + 2
        elif (word.startswith("-c") and len(word) > 2) or (word.startswith("--") and "=" in word):
            pair, i = word[2:], i + 1  # -cname=value, --name=value
        else:
            raise VigieError(
                f"the DSN's options {options!r} hold {word!r}: behind PgBouncer (db_pooler: pgbouncer) only "
                "'-c name=value' settings can be carried, per transaction; remove it or set db_pooler: none"
            )
        name, eq, value = pair.partition("=")
        if not eq or not name:
            raise VigieError(f"the DSN's options {options!r} hold {pair!r}: expected '-c name=value'")
        settings[name.replace("-", "_")] = value
    return PooledDsn(make_conninfo("", **params), settings)


def begin_statement(pooled: PooledDsn, schema: str | None) -> sql.Composed:
    """``BEGIN`` (``READ ONLY`` when asked) and the DSN's settings for this transaction only.

    ``schema`` (the store's own, when given) wins over the DSN's ``search_path``.
    """
    settings = {k: v for k, v in pooled.settings.items() if k != "default_transaction_read_only"}
    if schema:
        settings["search_path"] = schema
    begin = sql.SQL("BEGIN READ ONLY" if pooled.read_only else "BEGIN")
    if not settings:
        return sql.Composed([begin])
    calls = sql.SQL(", ").join(
        sql.SQL("set_config({}, {}, true)").format(sql.Literal(k), sql.Literal(v))
        for k, v in settings.items()
    )
    return sql.Composed([begin, sql.SQL("; SELECT "), calls])
