"""Issue 17, finding 1: hostile names from devices, imports and users never run as script in the dashboard.

A real hub under uvicorn, a real Chromium. Every field the dashboard shows (device, site, zone, model,
category, campaign) is filled with markup that would set ``window.__pwned`` or ``document.title`` if it
were parsed as HTML; the test asserts it is shown as text, that nothing ran, and that every response
carries the security headers (CSP, nosniff, no referrer, no framing).
"""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.auth import hash_password
from hub.campaigns import CampaignStore
from hub.storage import SQLiteStore
from hub.storage.base import CubeRow
from tests.browser import RunningHub as HostileHub
from tests.browser import fresh_hub, headless_chromium, submit_login

PASSWORD = "dashboard security password"
TITLE = "Vigie: observatory dashboard"


def hostile(field: str) -> str:
    """Markup that runs script wherever it is parsed as HTML (attribute or element context)."""
    return (
        f"\"'><img src=x onerror=\"window.__pwned='{field}';document.title='pwned'\">"
        f"<svg onload=\"window.__pwned='{field}'\"></svg><script>window.__pwned='{field}'</script>"
    )


HOSTILE = {f: hostile(f) for f in ("site", "device", "zone", "model", "category", "campaign", "target")}


def _plant(db: Path) -> None:
    """Hostile values as they would reach the store from an old hub, an import or a user."""
    store = SQLiteStore(db)
    now = time.time()
    store.add_user("root", hash_password(PASSWORD), "admin", now)
    hour = int(now // 3600 * 3600)
    store.replace_cube([CubeRow("h3:8844c0a305fffff", hour, HOSTILE["category"], "theft", 5.0)])
    CampaignStore(store).create(HOSTILE["target"], "1.0.0", ["d1"], name=HOSTILE["campaign"])
    store.close()
    beat = {"model": HOSTILE["model"], "fps": 5.0, "cpu_temp_c": 50}
    with sqlite3.connect(db) as con:
        con.execute(
            "INSERT INTO devices (site, device, first_seen, last_seen, status, heartbeat)"
            " VALUES (?,?,?,?,?,?)",
            (HOSTILE["site"], HOSTILE["device"], now, now, "online", json.dumps(beat)),
        )


def _plant_event(db: Path, n: int) -> None:
    """A live event with hostile site, device and zone (the stream shows only events newer than itself):
    written as the store keeps it, past the wire model's validation that would refuse it."""
    part = {"zone": HOSTILE["zone"], "window_s": 10}
    with sqlite3.connect(db) as con:
        con.execute(
            "INSERT OR IGNORE INTO event_streams (site, device, kind, place) VALUES (?,?,?,?)",
            (HOSTILE["site"], HOSTILE["device"], "zone_count", HOSTILE["zone"]),
        )
        (stream,) = con.execute(
            "SELECT stream FROM event_streams WHERE site = ? AND device = ? AND kind = 'zone_count'",
            (HOSTILE["site"], HOSTILE["device"]),
        ).fetchone()
        con.execute(
            "INSERT INTO events_hot (id, stream, window_start, received_at, part) VALUES (?,?,?,?,?)",
            (uuid.uuid4().bytes, stream, int(time.time()) // 10 * 10, time.time(), json.dumps(part).encode()),
        )


@pytest.fixture(scope="module")
def hostile_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileHub]:
    with fresh_hub(tmp_path_factory.mktemp("hostile"), _plant) as running:
        yield running


SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def _check_headers(headers: dict[str, str]) -> None:
    lower = {k.lower(): v for k, v in headers.items()}
    for name, value in SECURITY_HEADERS.items():
        assert lower.get(name) == value, (name, lower)
    csp = lower.get("content-security-policy", "")
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert directives.get("default-src") == ["'self'"], csp
    assert directives.get("frame-ancestors") == ["'none'"], csp
    assert "'unsafe-inline'" not in directives.get("script-src", directives["default-src"]), csp
    assert "'unsafe-inline'" not in directives.get("style-src", directives["default-src"]), csp


PATHS = ["/dashboard/", "/dashboard/app.js", "/v1/health", "/v1/auth/me", "/no/such/path", "/openapi.json",
         "/docs", "/static/vendor/leaflet/dist/leaflet.js", "/v1/map/districts"]  # fmt: skip


@pytest.mark.parametrize("path", PATHS)
def test_security_headers_on_every_response(hostile_hub: HostileHub, path: str) -> None:
    """Successful, refused (401) and missing (404) responses alike carry the headers."""
    try:
        with urllib.request.urlopen(hostile_hub.url + path, timeout=10) as response:  # noqa: S310 (local hub)
            headers = dict(response.headers)
    except urllib.error.HTTPError as exc:
        headers = dict(exc.headers)
    _check_headers(headers)


@pytest.mark.browser
def test_hostile_names_are_shown_as_text(hostile_hub: HostileHub, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = headless_chromium(tmp_path / "profile")
    wait = WebDriverWait(browser, 30)
    try:
        submit_login(browser, hostile_hub.url, "root", PASSWORD)
        wait.until(lambda b: b.find_element(By.ID, "who").text == "root (admin)")
        wait.until(lambda b: b.find_element(By.ID, "fleet-status").text == "1 devices")
        wait.until(lambda b: HOSTILE["campaign"] in b.find_element(By.ID, "rollouts").text)
        wait.until(lambda b: b.find_element(By.ID, "live-status").text == "connected")
        n = 0
        while HOSTILE["zone"] not in browser.find_element(By.ID, "live").text and n < 10:
            n += 1
            _plant_event(hostile_hub.db, n)
            time.sleep(1.5)
        fleet = browser.find_element(By.ID, "fleet").text
        rollouts = browser.find_element(By.ID, "rollouts").text
        live = browser.find_element(By.ID, "live").text
        sources = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#source option")]
        # Every hostile value is on the page, character for character, as text.
        for field in ("site", "device", "model"):
            assert HOSTILE[field] in fleet, field
        for field in ("campaign", "target"):
            assert HOSTILE[field] in rollouts, field
        for field in ("site", "device", "zone"):
            assert HOSTILE[field] in live, field
        assert HOSTILE["category"] in sources
        # And none of it ran, nor became an element.
        assert browser.execute_script("return window.__pwned === undefined")
        assert browser.title == TITLE
        assert not browser.find_elements(By.CSS_SELECTOR, "main img, main script, aside svg")
        violations = [e for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
        assert not violations, violations  # the dashboard itself needs nothing the CSP forbids
        # The headers, as the browser received them.
        headers = browser.execute_script(
            "const r = await fetch('/dashboard/'); return Object.fromEntries(r.headers.entries());"
        )
        _check_headers(headers)
    finally:
        browser.quit()
