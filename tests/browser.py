"""For the dashboard tests: a hub under uvicorn, and a headless Chromium (skipped without one)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import cli, need_service
from vigie.netutil import free_port, wait_for_port

__all__ = ["NETWORK_CUT", "RunningHub", "fresh_hub", "headless_chromium", "serve_hub", "submit_login"]

#: Chromium switches that cut the network but for this machine: every other host goes to a dead proxy.
NETWORK_CUT = ("--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1;localhost")


@contextmanager
def serve_hub(db: Path, env: Mapping[str, str], log: Path) -> Iterator[str]:
    """``vigie hub serve --no-ingest`` on ``db`` and a free port; yields its base URL."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cli("hub", "serve", "--no-ingest", "--db", str(db), "--port", str(port)),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
        )
        try:
            assert wait_for_port(port, timeout=30), log.read_text()[-2000:]
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=20)


@dataclass
class RunningHub:
    url: str
    db: Path


@contextmanager
def fresh_hub(folder: Path, prepare: Callable[[Path], object] | None = None) -> Iterator[RunningHub]:
    """A hub on a new SQLite file in ``folder`` (``prepare`` fills it first), no state folder, no ingest."""
    from hub.storage import SQLiteStore

    db = folder / "hub.sqlite"
    SQLiteStore(db).close()
    if prepare is not None:
        prepare(db)
    env = {**os.environ, "VIGIE_HUB_RATE": "500"}
    env.pop("VIGIE_HUB_STATE_DIR", None)
    with serve_hub(db, env, folder / "hub.log") as url:
        yield RunningHub(url, db)


FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


def headless_chromium(profile: Path, extra_flags: tuple[str, ...] = ()) -> Any:
    """A started selenium driver with its own profile folder; the browser's console log is kept.

    ``extra_flags``: more Chromium switches, e.g. a dead proxy that cuts every host but the hub.
    """
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    need_service(
        Path(chromium).exists() and Path(driver_path).exists(),
        "Chromium and ChromeDriver (apt-get install chromium chromium-driver)",
    )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*FLAGS, f"--user-data-dir={profile}", *extra_flags):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def submit_login(browser: Any, url: str, username: str, password: str) -> None:
    """Open the dashboard at ``url`` and submit the login form (the caller waits for the outcome)."""
    from selenium.webdriver.common.by import By

    browser.get(f"{url}/dashboard/")
    browser.find_element(By.ID, "username").send_keys(username)
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
