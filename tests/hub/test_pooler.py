"""What the store sends instead of session state behind PgBouncer (hub/storage/pooler.py), without one."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from hub.live import EventWaker
from hub.storage.pooler import begin_statement, split_options
from vigie.exceptions import VigieError


def test_the_options_leave_the_dsn_and_become_settings() -> None:
    pooled = split_options(
        "postgresql://vigie@pgbouncer:6432/vigie?options=-c%20search_path%3Dcity%20-cstatement_timeout%3D5s"
    )
    assert "options" not in pooled.dsn
    assert "port=6432" in pooled.dsn
    assert pooled.settings == {"search_path": "city", "statement_timeout": "5s"}
    assert pooled.schema() == "city"
    assert not pooled.read_only


def test_a_dsn_without_options_is_unchanged_and_sets_nothing() -> None:
    pooled = split_options("host=pgbouncer port=6432 dbname=vigie")
    assert pooled.settings == {}
    assert pooled.schema() is None
    assert begin_statement(pooled, None).as_string(None) == "BEGIN"


def test_each_transaction_sets_the_schema_and_read_only_for_itself_only() -> None:
    pooled = split_options("host=b dbname=v options='-c default_transaction_read_only=on -c search_path=a'")
    assert pooled.read_only
    sql = begin_statement(pooled, None).as_string(None)
    assert sql == "BEGIN READ ONLY; SELECT set_config('search_path', 'a', true)"
    # The store's own schema wins over the DSN's, and a value is quoted, never pasted.
    sql = begin_statement(split_options("host=b options='-c search_path=x'"), "t_1").as_string(None)
    assert sql == "BEGIN; SELECT set_config('search_path', 't_1', true)"
    quoted = begin_statement(split_options("host=b options='-c application_name=o\\'k'"), None)
    assert "'o''k'" in quoted.as_string(None)


@pytest.mark.parametrize("options", ["-X", "-c", "-c noequals", "--"])
def test_options_that_are_not_settings_are_refused_by_name(options: str) -> None:
    with pytest.raises(VigieError, match="options"):
        split_options(f"host=b options='{options}'")


class _PooledStore:
    backend, pooler, dsn = "postgres", "pgbouncer", "host=bouncer"

    def current_schema(self) -> str:
        return "city"


def test_live_streams_listen_on_live_db_behind_a_pooler_else_poll_and_say_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store: Any = _PooledStore()
    waker = EventWaker.for_store(store, live_db="host=primary")
    assert waker._target == ("host=primary", "city")
    with caplog.at_level(logging.WARNING):
        polling = EventWaker.for_store(store)
    assert polling._target is None
    assert "VIGIE_HUB_LIVE_DB" in caplog.text


def test_options_split_as_the_server_does_a_backslash_keeps_a_space() -> None:
    pooled = split_options(r"host=b options='-c application_name=my\\ hub -c search_path=a'")
    assert pooled.settings == {"application_name": "my hub", "search_path": "a"}
