"""Issue 17, finding 7: query parameters out of bounds are the caller's mistake (400/422), never a 500."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hub.api.paging import encode_cursor
from hub.auth import hash_password, issue_token
from hub.storage import SQLiteStore
from tests.browser import RunningHub, fresh_hub

TOKENS: dict[str, str] = {}


def _admin(db: Path) -> None:
    store = SQLiteStore(db)
    store.add_user("root", hash_password("query bounds password"), "admin", time.time())
    TOKENS["root"] = issue_token(store, "root", ttl_s=3600)[0]
    store.close()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    with fresh_hub(tmp_path_factory.mktemp("bounds"), _admin) as running:
        yield running


UUID0 = "00000000-0000-7000-8000-000000000000"
HOSTILE_CURSORS = [
    "²", "٣", "１", "9" * 30, str(2**63), "-1", "1e3", " 1", "1 ", "0x10", "",
    # Base64url JSON of the right shape, wrong contents (issue 24: the cursor is (window start, id)).
    encode_cursor((0, "not-an-id")), encode_cursor((0, "0000000A-0000-7000-8000-00000000000B")),
    encode_cursor((2**63, UUID0)),
    encode_cursor((-1, UUID0)), encode_cursor((UUID0, 0)), encode_cursor((0,)), encode_cursor((0, UUID0, 1)),
]  # fmt: skip


@pytest.mark.parametrize("cursor", HOSTILE_CURSORS)
def test_a_cursor_that_this_api_never_returned_is_a_client_error(hub: RunningHub, cursor: str) -> None:
    response = httpx.get(
        f"{hub.url}/v1/events",
        params={"cursor": cursor},
        headers={"Authorization": f"Bearer {TOKENS['root']}"},
        timeout=10,
    )
    assert response.status_code in {400, 422}, (cursor, response.status_code, response.text)
    assert "cursor" in response.text


@pytest.mark.parametrize(
    ("param", "value"), [("site", "s" * 10_000), ("device", "x" * 10_000), ("zone", "z" * 10_000)]
)
def test_filters_have_a_length_bound(hub: RunningHub, param: str, value: str) -> None:
    response = httpx.get(
        f"{hub.url}/v1/events",
        params={param: value},
        headers={"Authorization": f"Bearer {TOKENS['root']}"},
        timeout=10,
    )
    assert response.status_code == 422, response.text
    assert param in response.text


def test_a_cursor_this_api_returned_still_works(hub: RunningHub) -> None:
    headers = {"Authorization": f"Bearer {TOKENS['root']}"}
    for key in ((0, UUID0), (1, UUID0), (2**63 - 1, "ffffffff-ffff-7fff-bfff-ffffffffffff")):
        cursor = encode_cursor(key)
        response = httpx.get(f"{hub.url}/v1/events", params={"cursor": cursor}, headers=headers, timeout=10)
        assert response.status_code == 200, (cursor, response.text)
        assert response.json()["data"] == []
