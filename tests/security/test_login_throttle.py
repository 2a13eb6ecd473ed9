"""Issue 17, finding 6: login throttling per account and per address, lockouts audited, hashes capped."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.audit import verify_chain
from hub.auth import HashersBusyError, HashSlots, hash_password, verify_password
from hub.login_guard import LoginGuard, ThrottlePolicy, add_failure, take_attempt
from hub.storage import SQLiteStore
from hub.storage.throttle import PURGE_EVERY
from tests.browser import RunningHub, fresh_hub

PASSWORD = "throttle test password"


# -- the decisions, with explicit clocks, on each storage backend ---------------------------------
def test_five_failures_lock_the_account_for_the_lockout(store: Any) -> None:
    guard = LoginGuard(ThrottlePolicy(max_failures=5, window_s=60, lockout_s=300, client_burst=1000))
    locks = [guard.failed(store, "ana", 1000.0 + i) for i in range(5)]
    assert locks == [None, None, None, None, 5]
    refused = guard.wait_s(store, "Ana", "10.0.0.1", 1010.0)  # names compare without case
    assert refused is not None
    assert refused[0] == pytest.approx(294.0)
    assert "account 'Ana' is locked" in refused[1]
    assert guard.wait_s(store, "bob", "10.0.0.1", 1010.0) is None  # other accounts are not affected
    assert guard.wait_s(store, "ana", "10.0.0.1", 1304.1) is None  # and the lock ends


def test_failures_outside_the_window_do_not_add_up(store: Any) -> None:
    guard = LoginGuard(ThrottlePolicy(max_failures=3, window_s=60, client_burst=1000))
    assert [guard.failed(store, "ana", t) for t in (0.0, 100.0, 200.0, 300.0)] == [None] * 4
    guard.failed(store, "ana", 301.0)
    guard.succeeded(store, "ana", 301.5)  # a success clears the count
    assert guard.failed(store, "ana", 302.0) is None
    assert guard.failed(store, "ana", 303.0) is None
    assert guard.failed(store, "ana", 304.0) == 3


def test_one_address_gets_its_burst_then_the_rate(store: Any) -> None:
    guard = LoginGuard(ThrottlePolicy(client_rate=0.5, client_burst=3))
    assert [guard.wait_s(store, f"u{i}", "10.0.0.9", 50.0) for i in range(3)] == [None] * 3
    refused = guard.wait_s(store, "u4", "10.0.0.9", 50.0)
    assert refused is not None
    assert refused[0] == pytest.approx(2.0)
    assert "too many login attempts from 10.0.0.9" in refused[1]
    assert guard.wait_s(store, "u4", "10.0.0.10", 50.0) is None  # another address has its own bucket
    assert guard.wait_s(store, "u4", "10.0.0.9", 52.0) is None


def test_two_stores_on_one_database_count_as_one(tmp_path: Path) -> None:
    """Two hub processes are two connections to one database: the failures add up across them."""
    guard = LoginGuard(ThrottlePolicy(max_failures=4, window_s=60, client_burst=1000))
    first, second = SQLiteStore(tmp_path / "h.sqlite"), SQLiteStore(tmp_path / "h.sqlite")
    try:
        assert [guard.failed(s, "ana", 10.0 + i) for i, s in enumerate([first, second] * 2)] == [None] * 3 + [
            4
        ]
        assert guard.wait_s(first, "ana", "10.0.0.1", 20.0) is not None
        assert guard.wait_s(second, "ana", "10.0.0.1", 20.0) is not None
    finally:
        first.close()
        second.close()


def test_unknown_names_do_not_grow_the_table_without_bound(store: Any) -> None:
    """Expired state is deleted as writes go on: a flood of names leaves only what is still live."""
    guard = LoginGuard(ThrottlePolicy(window_s=60, client_burst=10**6))
    for i in range(PURGE_EVERY):
        guard.failed(store, f"nobody-{i}", 10.0)
    assert store.count_throttle() >= PURGE_EVERY
    for i in range(PURGE_EVERY):
        guard.failed(store, f"later-{i}", 1000.0)  # the first names' failures are 990 s old by now
    assert store.count_throttle() <= PURGE_EVERY + 1


def test_the_pure_decisions() -> None:
    state, wait, expires = take_attempt(None, 0.0, rate=1.0, burst=2)
    assert (state["tokens"], wait, expires) == (1.0, 0.0, 1.0)
    state, wait, _ = take_attempt(state, 0.0, rate=1.0, burst=2)
    state, wait, _ = take_attempt(state, 0.5, rate=1.0, burst=2)
    assert wait == pytest.approx(0.5)
    policy = ThrottlePolicy(max_failures=2, window_s=10, lockout_s=100)
    state, expires, locks = add_failure(None, 0.0, policy)
    assert (expires, locks) == (10.0, None)
    state, expires, locks = add_failure(state, 5.0, policy)
    assert (state["locked_until"], expires, locks) == (105.0, 105.0, 2)


# -- the cap on argon2 hashes, with real hashes -------------------------------------------------
def test_at_most_the_slots_hash_at_once() -> None:
    slots = HashSlots(2)
    stored = hash_password(PASSWORD)

    def attempt() -> None:
        with slots.slot():
            verify_password(stored, "wrong password here")

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert slots.peak == 2
    assert slots.in_use == 0


def test_a_hash_that_waits_too_long_is_refused() -> None:
    slots = HashSlots(1, wait_s=0.2)
    with slots.slot(), pytest.raises(HashersBusyError, match="1 password hashes already running"):  # noqa: SIM117
        with slots.slot():
            pass


# -- against a real hub -------------------------------------------------------------------------
def _add_users(db: Path) -> None:
    store = SQLiteStore(db)
    for name in ("ana", "bob"):
        store.add_user(name, hash_password(PASSWORD), "analyst", time.time())
    store.close()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RunningHub]:
    with fresh_hub(tmp_path, _add_users) as running:
        yield running


def _login(hub: RunningHub, username: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{hub.url}/v1/auth/token", data={"username": username, "password": password}, timeout=30
    )


def test_repeated_wrong_passwords_lock_the_account_and_are_audited(hub: RunningHub) -> None:
    statuses = [_login(hub, "ana", "not the password").status_code for _ in range(5)]
    assert statuses == [401] * 5
    locked = _login(hub, "ana", PASSWORD)  # even the right password, while locked
    assert locked.status_code == 429
    assert 800 < int(locked.headers["Retry-After"]) <= 900
    assert "account 'ana' is locked" in locked.json()["detail"]
    assert _login(hub, "bob", PASSWORD).status_code == 200
    store = SQLiteStore(hub.db)
    try:
        lockouts = [e for e in store.list_audit(username="ana") if e["method"] == "LOCKOUT"]
        assert len(lockouts) == 1
        assert lockouts[0]["params"]["failures"] == 5
        assert lockouts[0]["params"]["client"] == "127.0.0.1"
        assert verify_chain(store).ok  # the lockout entry is in the hash chain like the rest
    finally:
        store.close()


def test_one_address_guessing_many_accounts_gets_429(hub: RunningHub) -> None:
    """40 attempts in a row from one address, each for a different name (no account lockout)."""
    answers = [_login(hub, f"guess-{i}", "not the password") for i in range(40)]
    refused = [r for r in answers if r.status_code == 429]
    assert {r.status_code for r in answers} == {401, 429}
    assert sum(r.status_code == 401 for r in answers) <= 10 + 3  # the burst, plus what the rate refills
    assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    assert "too many login attempts from 127.0.0.1" in refused[0].json()["detail"]
