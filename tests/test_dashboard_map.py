"""The analyst's map in Chromium (issue 20): Marseille's districts, drill-down, chart, fleet, tiles, /docs.

A hub under uvicorn with Marseille's 111 quartiers as its districts (``../shared/data/geo``) and a
police logbook for them. Marseille publishes no incident log, so the logbook is generated here
(seeded: points drawn inside the real quartier polygons, more in the centre), in the documented
``main_courante`` format, and imported through the real importer. Houston's real incidents are on
the dashboard in ``tests/test_dashboard.py``. Screenshots go to ``docs/img/`` (docs/dashboard.md)
when ``VIGIE_SCREENSHOTS=1``, else to the test's folder.
"""

from __future__ import annotations

import csv
import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hub.auth import hash_password
from hub.fusion.importer import import_file
from hub.fusion.observation import load_mapping
from hub.fusion.zones import Polygon, ZoneIndex, load_geojson
from hub.storage import SQLiteStore
from tests.browser import NETWORK_CUT, headless_chromium, serve_hub, submit_login
from tests.conftest import ROOT, SHARED, need
from tests.tiles import TileHandler

PASSWORD = "map test password"
QUARTIERS = SHARED / "data" / "geo" / "marseille_quartiers_111.geojson"
CATEGORIES = ("tapage", "vol", "rixe", "dégradation")
PLANTED_DEVICES = {  # (site, device): status, heartbeat as an agent sends it (vigie.wire.Heartbeat)
    ("vieux-port", "cam-01"): ("online", {"model": "ssd-mobilenet-v2@1.0.0", "fps": 4.8, "cpu_temp_c": 61.5,
                                          "outbox_depth": 0, "outbox_dropped": 0}),
    ("noailles", "cam-02"): ("offline", {"model": "ssd-mobilenet-v2@1.0.0", "fps": 0.0, "cpu_temp_c": 83.0,
                                         "outbox_depth": 412, "outbox_dropped": 37}),
}  # fmt: skip


def shots_dir(tmp_path: Path) -> Path:
    return ROOT / "docs" / "img" if os.environ.get("VIGIE_SCREENSHOTS") else tmp_path


def _random_point(rng: random.Random, polygon: Polygon) -> tuple[float, float]:
    x0, y0, x1, y1 = polygon.bbox
    for _ in range(10_000):
        lon, lat = rng.uniform(x0, x1), rng.uniform(y0, y1)
        if polygon.contains(lat, lon):
            return lat, lon
    raise AssertionError(f"no point found inside {polygon.name}")


def write_logbook(path: Path, polygons: list[Polygon], seed: int = 20) -> int:
    """A main courante for two months, denser near the Vieux-Port.

    Reports come in bursts (a brawl or a noisy party brings several calls within the hour): a burst
    of 5 to 9 reports of one category, one hour, one quartier. Hours of single reports would all be
    suppressed, and with them every week and month made only of them (docs/privacy.md).
    """
    rng = random.Random(seed)
    centre = (43.2965, 5.3698)
    rows = []
    start = datetime(2025, 2, 1, tzinfo=UTC)
    for polygon in polygons:
        x0, y0, x1, y1 = polygon.bbox
        dist = abs((y0 + y1) / 2 - centre[0]) + abs((x0 + x1) / 2 - centre[1])
        for _ in range(int(24 * max(0.1, 1 - dist / 0.12))):
            hour = start + timedelta(hours=rng.randrange(59 * 24))
            category = rng.choice(CATEGORIES)
            for _ in range(rng.randint(5, 9)):
                lat, lon = _random_point(rng, polygon)
                when = hour + timedelta(minutes=rng.uniform(0, 59))
                rows.append([when.strftime("%Y-%m-%dT%H:%M:%SZ"), category, "appel", f"{lat:.6f}",
                             f"{lon:.6f}", "", "", ""])  # fmt: skip
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["date_heure", "categorie", "initiative", "lat", "lon", "adresse", "resume", "personnes"]
        )
        writer.writerows(rows)
    return len(rows)


@dataclass
class MapHub:
    url: str
    db: Path
    incidents: int


def _plant_devices(db: Path) -> None:
    now = time.time()
    with sqlite3.connect(db) as con:
        for (site, device), (status, beat) in PLANTED_DEVICES.items():
            last = now - (5 if status == "online" else 3 * 3600)
            con.execute(
                "INSERT INTO devices (site, device, first_seen, last_seen, status, heartbeat)"
                " VALUES (?,?,?,?,?,?)",
                (site, device, now - 86400, last, status, json.dumps(beat)),
            )


def start_map_hub(folder: Path, extra_env: dict[str, str] | None = None) -> Iterator[MapHub]:
    """A hub with the quartiers as districts and the generated logbook imported and learnt."""
    db = folder / "hub.sqlite"
    polygons = load_geojson(need(QUARTIERS), "nom_qua")
    logbook = folder / "main-courante.csv"
    n = write_logbook(logbook, polygons)
    store = SQLiteStore(db)
    import_file(store, "police", logbook, load_mapping(ROOT / "hub/fusion/mappings/main_courante.yaml"),
                ZoneIndex(8, polygons))  # fmt: skip
    store.add_user("ana", hash_password(PASSWORD), "analyst", time.time())
    store.add_user("root", hash_password(PASSWORD), "admin", time.time())
    store.close()
    _plant_devices(db)
    env = {**os.environ, "VIGIE_HUB_RATE": "500", "VIGIE_HUB_K": "5", "VIGIE_HUB_ZONES": str(QUARTIERS),
           "VIGIE_HUB_TZ": "Europe/Paris", **(extra_env or {})}  # fmt: skip
    env.pop("VIGIE_HUB_STATE_DIR", None)
    with serve_hub(db, env, folder / "hub.log") as url:
        yield MapHub(url, db, n)


@pytest.fixture(scope="module")
def map_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MapHub]:
    yield from start_map_hub(tmp_path_factory.mktemp("map"))


def _login(browser: Any, url: str, user: str, who: str) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 40)
    submit_login(browser, url, user, PASSWORD)
    wait.until(lambda b: b.find_element(By.ID, "who").text == who)
    return wait


def _explain(browser: Any) -> str:
    """What the page said, for a failed wait: statuses and the console."""
    from selenium.webdriver.common.by import By

    said = {
        i: browser.find_element(By.ID, i).text
        for i in ("map-status", "chart-status", "time-label", "vendor-error")
    }
    return f"{said}; console: {[e['message'] for e in browser.get_log('browser')][-10:]}"


def _no_csp_violation(browser: Any) -> None:
    violations = [e for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
    assert not violations, violations


@pytest.mark.browser
def test_districts_drill_down_and_chart(map_hub: MapHub, tmp_path: Path) -> None:
    """Named districts drawn and labelled, served at k by default, a drill to cells, a chart with points."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    out = shots_dir(tmp_path)
    browser = headless_chromium(tmp_path / "profile")
    try:
        browser.set_window_size(1400, 1500)  # the map and the chart in one screenshot
        wait = _login(browser, map_hub.url, "ana", "ana (analyst)")
        wait.until(lambda b: b.find_element(By.ID, "map").get_attribute("data-coloured"))
        wait.until(lambda b: int(b.find_element(By.ID, "chart").get_attribute("data-points") or 0) > 0)
        # The base layer: every quartier drawn, and labels an analyst can read (not all: no overlaps).
        assert browser.find_element(By.ID, "level").get_attribute("value") == "district"
        paths = browser.find_elements(By.CSS_SELECTOR, "#map path.leaflet-interactive")
        assert len(paths) == 111
        labels = [
            e.text for e in browser.find_elements(By.CSS_SELECTOR, ".district-label:not(.hidden-label)")
        ]
        names = {f["properties"]["nom_qua"] for f in json.loads(QUARTIERS.read_text())["features"]}
        assert len(labels) >= 15, labels
        assert set(labels) <= names, labels
        overlaps = browser.execute_script(
            "const r = [...document.querySelectorAll('.district-label:not(.hidden-label) .district-name')]"
            ".map(e => e.getBoundingClientRect()); let n = 0;"
            "for (let i = 0; i < r.length; i++) for (let j = 0; j < i; j++) {"
            " const a = r[i], b = r[j];"
            " if (a.left < b.right && a.right > b.left && a.top < b.bottom && a.bottom > b.top) n++; }"
            "return n;"
        )
        assert overlaps == 0  # every label shown can be read
        # A scale bar and a legend.
        assert browser.find_element(By.CSS_SELECTOR, ".leaflet-control-scale-line").text.endswith(("m", "km"))
        assert "under k=5" in browser.find_element(By.ID, "legend").text
        # Coarser first: by default most districts of the latest period are served, not hatched.
        coloured = int(browser.find_element(By.ID, "map").get_attribute("data-coloured"))
        hatched = len(browser.find_elements(By.CSS_SELECTOR, "#map path.suppressed"))
        assert coloured > hatched, (coloured, hatched)
        assert coloured >= 30, (coloured, hatched)
        label = browser.find_element(By.ID, "time-label").text
        assert label.startswith(("week of 2025-03", "month of 2025-03")), label
        ActionChains(browser).move_to_element(
            browser.find_element(By.TAG_NAME, "h1")
        ).perform()  # no hover tip
        browser.save_screenshot(str(out / "dashboard-districts.png"))

        # The search box: a district by name (case and accents folded) drills into it.
        search = browser.find_element(By.ID, "search")
        search.send_keys("noailles")
        browser.find_element(By.CSS_SELECTOR, "#search-form button").click()
        wait.until(lambda b: b.find_element(By.ID, "map").get_attribute("data-drill") == "poly:NOAILLES")
        wait.until(lambda b: b.find_element(By.ID, "chart-title").text.startswith("NOAILLES"))
        cells = int(browser.find_element(By.ID, "drill-up").text.split("showing ")[1].split()[0])
        assert cells >= 1
        wait.until(lambda b: b.find_element(By.ID, "map").get_attribute("data-drill-coloured") is not None)
        # The chart: points for served periods, gaps (null) for suppressed ones, real dates on its axis.
        chart = browser.find_element(By.ID, "chart")
        assert int(chart.get_attribute("data-points")) > 0
        assert browser.find_elements(By.CSS_SELECTOR, "#chart canvas")
        axis = " ".join(
            e.text for e in browser.find_elements(By.CSS_SELECTOR, "#chart .u-legend, #chart .u-axis")
        )
        assert "police" in axis
        ActionChains(browser).move_to_element(browser.find_element(By.TAG_NAME, "h1")).perform()
        browser.save_screenshot(str(out / "dashboard-drill-down.png"))
        chart.screenshot(str(out / "dashboard-chart.png"))
        _no_csp_violation(browser)
    except Exception as exc:
        raise AssertionError(_explain(browser)) from exc
    finally:
        browser.quit()


@pytest.mark.browser
def test_fleet_panel_shows_what_the_api_says_and_refreshes(map_hub: MapHub, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    browser = headless_chromium(tmp_path / "profile")
    try:
        browser.set_window_size(1400, 1100)
        wait = _login(browser, map_hub.url, "root", "root (admin)")
        wait.until(lambda b: b.find_element(By.ID, "fleet-status").text == f"{len(PLANTED_DEVICES)} devices")
        api = browser.execute_script(
            "const r = await fetch('/v1/devices', {headers: {Authorization: "
            "'Bearer ' + sessionStorage.getItem('vigie.token')}}); return (await r.json()).data;"
        )
        rows = {
            r.find_element(By.CSS_SELECTOR, "td").text.split("\n")[0]: [
                c.text for c in r.find_elements(By.CSS_SELECTOR, "td")
            ]
            for r in browser.find_elements(By.CSS_SELECTOR, "#fleet tbody tr")
        }
        for d in api:
            row = rows[f"{d['site']}/{d['device']}"]
            hb = d["heartbeat"]
            # Device and model, status, last seen, °C, outbox, dropped, fps: as the API serves them.
            assert row[1] == d["status"]
            assert row[2].endswith("ago")
            assert row[3] == f"{hb['cpu_temp_c']:.1f}"
            assert row[4] == str(hb["outbox_depth"])
            assert row[5] == str(hb["outbox_dropped"])
            assert row[0].split("\n")[1] == hb["model"]
            assert row[6] == f"{hb['fps']:.1f}"
        assert rows["noailles/cam-02"][2] == "3 h ago"
        browser.find_element(By.CSS_SELECTOR, "aside").screenshot(
            str(shots_dir(tmp_path) / "dashboard-fleet.png")
        )
        # Refreshed every few seconds: a device going offline shows without a reload.
        with sqlite3.connect(map_hub.db) as con:
            con.execute("UPDATE devices SET status = 'offline' WHERE device = 'cam-01'")
        wait.until(
            lambda b: b.find_element(By.CSS_SELECTOR, "#fleet tbody tr td:nth-child(2)").text == "offline"
        )
        with sqlite3.connect(map_hub.db) as con:
            con.execute("UPDATE devices SET status = 'online' WHERE device = 'cam-01'")
        _no_csp_violation(browser)
    except Exception as exc:
        raise AssertionError(_explain(browser)) from exc
    finally:
        browser.quit()


@pytest.mark.browser
def test_tiles_from_the_citys_own_server(tmp_path: Path) -> None:
    """With ``tile_url`` set, the city's tiles are drawn under the districts, requested from that server."""
    from selenium.webdriver.common.by import By

    server = ThreadingHTTPServer(("127.0.0.1", 0), TileHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    (tmp_path / "hub").mkdir()
    tiles = {
        "VIGIE_HUB_TILE_URL": f"http://127.0.0.1:{port}/{{z}}/{{x}}/{{y}}.png",
        "VIGIE_HUB_TILE_ATTRIBUTION": "<b>Ville</b> de Marseille",
    }
    hub_iter = start_map_hub(tmp_path / "hub", tiles)
    hub = next(hub_iter)
    browser = headless_chromium(tmp_path / "profile", NETWORK_CUT)
    try:
        wait = _login(browser, hub.url, "ana", "ana (analyst)")
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#map img.leaflet-tile-loaded")) >= 4)
        zooms = {int(p.split("/")[1]) for p in TileHandler.requested}
        assert len(TileHandler.requested) >= 4, TileHandler.requested
        assert min(zooms) >= 9, TileHandler.requested[:10]  # tiles of the city, not of the world
        # The attribution is shown as text, never as markup.
        assert (
            "<b>Ville</b> de Marseille"
            in browser.find_element(By.CSS_SELECTOR, ".leaflet-control-attribution").text
        )
        _no_csp_violation(browser)  # the tile server's origin, and only it, is allowed as an image source
    except Exception as exc:
        raise AssertionError(_explain(browser)) from exc
    finally:
        browser.quit()
        server.shutdown()
        hub_iter.close()


@pytest.mark.browser
def test_api_pages_render_with_the_network_cut(map_hub: MapHub, tmp_path: Path) -> None:
    """/docs (Swagger UI) and /redoc (ReDoc) from the hub's own copies, with every other host unreachable."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = headless_chromium(tmp_path / "profile", NETWORK_CUT)
    wait = WebDriverWait(browser, 40)
    try:
        browser.get(f"{map_hub.url}/docs")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"))
        assert "Vigie hub" in browser.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".opblock")) > 20)
        hosts = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => new URL(e.name).host)"
        )
        assert set(hosts) == {map_hub.url.removeprefix("http://")}
        _no_csp_violation(browser)
        browser.get(f"{map_hub.url}/redoc")
        wait.until(lambda b: "Vigie hub" in b.find_element(By.TAG_NAME, "body").text)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "[data-section-id]"))
        # ReDoc's "API docs by Redocly" footer asks for its logo from cdn.redoc.ly: the CSP refuses it,
        # and that is the only thing refused.
        refused = [
            e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]
        ]
        assert all("https://cdn.redoc.ly/" in m for m in refused), refused
    finally:
        browser.quit()


@pytest.mark.browser
def test_missing_libraries_say_which_command_to_run(tmp_path: Path) -> None:
    """Without the front-end packages: a banner naming the fix, not a blank page; the rest still works."""
    from selenium.webdriver.common.by import By

    (tmp_path / "hub").mkdir()
    hub_iter = start_map_hub(tmp_path / "hub", {"VIGIE_HUB_ASSETS_DIR": str(tmp_path / "empty")})
    hub = next(hub_iter)
    browser = headless_chromium(tmp_path / "profile")
    try:
        wait = _login(browser, hub.url, "root", "root (admin)")
        wait.until(lambda b: b.find_element(By.ID, "vendor-error").is_displayed())
        assert "run `vigie hub assets fetch`" in browser.find_element(By.ID, "vendor-error").text
        wait.until(lambda b: b.find_element(By.ID, "fleet-status").text == f"{len(PLANTED_DEVICES)} devices")
    finally:
        browser.quit()
        hub_iter.close()
