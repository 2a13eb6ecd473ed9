"""Issue 17, finding 6, across processes: N uvicorn workers throttle logins as one.

The throttling state lived in each process: with 2 workers an account took up to 9 wrong passwords
before its lockout instead of 5, and one address got twice its burst. Now it is in the shared store
(hub/storage/throttle.py); a real hub with 1 and with 2 workers on PostgreSQL must answer alike.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from hub.auth import hash_password
from tests.conftest import cli
from vigie.netutil import free_port, wait_for_port

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
PASSWORD = "shared throttle password"
ACCOUNTS = 4


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"])
def hub(request: pytest.FixtureRequest, pg_store: Any, tmp_path: Path) -> Iterator[str]:
    """``vigie hub serve --workers N`` on a PostgreSQL schema of its own; yields its URL."""
    for i in range(ACCOUNTS):
        pg_store.add_user(f"ana-{i}", hash_password(PASSWORD), "analyst", time.time())
    dsn = f"postgresql://127.0.0.1:5432/test?options={quote(f'-c search_path={pg_store.schema}')}"
    port = free_port()
    env = {**os.environ, "VIGIE_HUB_RATE": "500"}
    env.pop("VIGIE_HUB_STATE_DIR", None)
    log = tmp_path / "hub.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cli(
                "hub",
                "serve",
                "--no-ingest",
                "--db",
                dsn,
                "--port",
                str(port),
                "--workers",
                str(request.param),
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        assert wait_for_port(port, timeout=30), log.read_text()[-2000:]
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # every worker up (the port opens before they are)
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _login(url: str, username: str, password: str, address: str) -> httpx.Response:
    """A fresh connection per attempt (the kernel spreads them over the workers), from ``address``
    as a reverse proxy on 127.0.0.1 would say (uvicorn trusts X-Forwarded-For from there)."""
    return httpx.post(
        f"{url}/v1/auth/token",
        data={"username": username, "password": password},
        headers={"X-Forwarded-For": address, "Connection": "close"},
        timeout=30,
    )


def test_the_lockout_comes_after_the_same_number_of_failures(hub: str) -> None:
    for i in range(ACCOUNTS):
        address = f"10.9.0.{i + 1}"  # one address per account: its bucket (10) is not what stops it
        wrong = [_login(hub, f"ana-{i}", "not the password", address).status_code for _ in range(5)]
        assert wrong == [401] * 5, f"ana-{i}"
        locked = _login(hub, f"ana-{i}", PASSWORD, address)
        assert locked.status_code == 429, f"ana-{i}: the 6th attempt, with the right password, got through"
        assert f"account 'ana-{i}' is locked" in locked.json()["detail"]


def test_one_address_gets_one_burst_whatever_the_workers(hub: str) -> None:
    answers = [_login(hub, f"guess-{i}", "not the password", "10.9.1.1").status_code for i in range(30)]
    assert sum(s == 401 for s in answers) <= 10 + 3  # the burst, plus what 0.2/s refills meanwhile
    assert 429 in answers
