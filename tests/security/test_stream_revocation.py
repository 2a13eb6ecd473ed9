"""Issue 17, finding 3: an open live-event stream closes within seconds of logout, revocation, expiry,
disablement or a role change, against a real hub under uvicorn."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from hub.auth import hash_password, issue_token
from hub.storage import SQLiteStore
from tests.browser import RunningHub as Hub
from tests.browser import fresh_hub

PASSWORD = "stream revocation password"
#: The stream must end this soon after the token stops being valid (the re-check runs every 2 s).
CLOSE_WITHIN_S = 5.0


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with fresh_hub(tmp_path_factory.mktemp("stream")) as running:
        yield running


def _user(hub: Hub, name: str, *, role: str = "analyst", ttl_s: float = 3600) -> str:
    store = SQLiteStore(hub.db)
    try:
        store.add_user(name, hash_password(PASSWORD), role, time.time())
        return issue_token(store, name, ttl_s=ttl_s)[0]
    finally:
        store.close()


def _with_store(hub: Hub, change: Callable[[SQLiteStore], object]) -> None:
    store = SQLiteStore(hub.db)
    try:
        change(store)
    finally:
        store.close()


def _stream_until_closed(hub: Hub, token: str, act: Callable[[], None]) -> tuple[float, str]:
    """Open the stream, run ``act`` once it is connected; seconds from ``act`` to the stream's end, and
    the stream's last line (which says why it closed)."""
    acted_at: list[float] = []
    last = ""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.stream(
        "GET", f"{hub.url}/v1/events/stream", params={"max_s": 120}, headers=headers, timeout=30
    ) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            last = line or last
            if line == ": connected" and not acted_at:
                acted_at.append(time.monotonic())
                threading.Thread(target=act, daemon=True).start()
            assert time.monotonic() - (acted_at or [time.monotonic()])[0] < 60, "stream never closed"
    assert acted_at, "the stream never said it was connected"
    return time.monotonic() - acted_at[0], last


def test_logout_closes_the_open_stream(hub: Hub) -> None:
    token = _user(hub, "ana-logout")

    def logout() -> None:
        httpx.post(f"{hub.url}/v1/auth/logout", headers={"Authorization": f"Bearer {token}"}, timeout=10)

    elapsed, last = _stream_until_closed(hub, token, logout)
    assert elapsed < CLOSE_WITHIN_S
    assert last == ": closed: token revoked"


def test_revoking_every_token_of_a_user_closes_the_stream(hub: Hub) -> None:
    token = _user(hub, "ana-revoked")
    revoke = lambda: _with_store(hub, lambda s: s.revoke_api_tokens(username="ana-revoked", now=time.time()))  # noqa: E731
    elapsed, last = _stream_until_closed(hub, token, revoke)
    assert elapsed < CLOSE_WITHIN_S
    assert last == ": closed: token revoked"


def test_disabling_the_account_closes_the_stream(hub: Hub) -> None:
    token = _user(hub, "ana-disabled")
    disable = lambda: _with_store(hub, lambda s: s.update_user("ana-disabled", disabled_at=time.time()))  # noqa: E731
    elapsed, last = _stream_until_closed(hub, token, disable)
    assert elapsed < CLOSE_WITHIN_S
    assert last == ": closed: account disabled"


def test_a_role_that_loses_the_scope_closes_the_stream(hub: Hub) -> None:
    token = _user(hub, "ana-demoted")
    demote = lambda: _with_store(hub, lambda s: s.update_user("ana-demoted", role="technician"))  # noqa: E731
    elapsed, last = _stream_until_closed(hub, token, demote)
    assert elapsed < CLOSE_WITHIN_S
    assert last == ": closed: role 'technician' lacks scope 'events:read'"


def test_expiry_closes_the_stream(hub: Hub) -> None:
    token = _user(hub, "ana-expiring", ttl_s=3)
    # Nothing to do: the token expires 3 s after it was issued, while the stream is open.
    elapsed, last = _stream_until_closed(hub, token, lambda: None)
    assert elapsed < 3 + CLOSE_WITHIN_S
    assert last == ": closed: token expired: log in again"


def test_a_valid_token_keeps_its_stream(hub: Hub) -> None:
    """The re-check does not close a stream whose token is still good (it runs to max_s)."""
    token = _user(hub, "ana-valid")
    start = time.monotonic()
    with httpx.stream(
        "GET",
        f"{hub.url}/v1/events/stream",
        params={"max_s": 6},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        for _ in response.iter_lines():
            pass
    assert time.monotonic() - start >= 5.5
