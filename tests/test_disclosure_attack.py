"""The attacker test (issue 16): one analyst fetches everything, then solves for every hidden cell.

Planted data holds several cells under k (k = 5) in one week, in one day, across
categories and zones, small device windows, and anomalies on hidden hours. One analyst,
with a token obtained by logging in, asks every aggregate route at every level (months
included), range (epoch seconds and ISO 8601), zone and category, reading the cube page by
page through its cursors (and the exports, Parquet included, events, roll-ups and the live
stream); the answers
become linear facts (``tests/attacker.py``) and, for every planted cell whose true
count is in 1..k-1, the smallest and largest count consistent with all of them must
not be a single value, nor meet 1..k-1 in a single value.

On the code before ``hub/disclosure`` (commit d76f89a, where this test was marked
xfail), the analyst pinned 4 of the planted cells: A/theft Tuesday 12:00 = 3 (its
anomaly's ``expected`` and ``p`` inverted), A/theft Thursday 20:00 = 2 (the week minus
the Monday-to-Wednesday sum served for the epoch-aligned partial week, minus the served
Saturday), and two device windows of 3 and 4 people (served raw by ``/v1/events``).
The hypothesis variant, run there, also pinned cube cells (A/assault = 1, among others).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.api.main import create_app
from hub.auth import hash_password
from hub.config import HubSettings
from hub.fusion.learning import poisson_sf
from hub.storage import CubeRow, EventQuery
from tests.attacker import Knowledge, anomaly_facts, cube_facts, event_facts, rollup_facts
from tests.test_wire import event
from vigie import wire
from vigie.broker import LocalBroker

K = 5
PASSWORD = "correct horse battery staple"
DAY, HOUR = 86_400, 3600
P0 = 1_767_567_600  # Monday 2026-01-05 00:00 in Paris (23:00 UTC the day before)
T0 = P0 + HOUR  # the same Monday 00:00 UTC
A, C = "h3:8844c0a301fffff", "h3:8844c0a303fffff"
AREA = "poly:NOAILLES"

#: (zone, category, day of the week from P0, local hour, count): small cells in one day (Monday
#: of A/theft), in one week (A/theft Tuesday and Thursday), across categories (A/assault) and
#: zones (C's Monday-Wednesday, the area), with busier cells around them.
CELLS: list[tuple[str, str, int, int, float]] = [
    (A, "theft", 0, 8, 6), (A, "theft", 0, 9, 6), (A, "theft", 0, 10, 7), (A, "theft", 0, 11, 1),
    (A, "theft", 0, 14, 2), (A, "theft", 1, 12, 3), (A, "theft", 2, 9, 8), (A, "theft", 2, 10, 9),
    (A, "theft", 3, 20, 2), (A, "theft", 5, 9, 6), (A, "theft", 7, 10, 9), (A, "theft", 8, 10, 12),
    (A, "assault", 0, 11, 1), (A, "assault", 0, 15, 1), (A, "assault", 1, 10, 6),
    (C, "theft", 0, 9, 2), (C, "theft", 1, 9, 2), (C, "theft", 2, 9, 2), (C, "theft", 4, 9, 7),
    (AREA, "theft", 0, 11, 1), (AREA, "theft", 0, 12, 5),
]  # fmt: skip
#: Anomalies the learner stored: on hidden hours (A/theft Tuesday 12:00, A/assault Tuesday) and a served one.
ANOMALIES = [(A, "theft", 1, 12, 3, 0.05), (A, "theft", 2, 10, 9, 0.5), (A, "assault", 0, 11, 3, 0.01)]
#: A device's windows (device k = 3): peak people per minute in one hour, two of them under the hub's k.
WINDOWS = [6, 7, 3, 4, 8, 9]


@dataclass
class Plant:
    cube: list[CubeRow] = field(default_factory=list)
    events: list[wire.ZoneCountEvent] = field(default_factory=list)
    anomalies: list[dict[str, Any]] = field(default_factory=list)

    def truth(self) -> dict[Any, int]:
        out: dict[Any, int] = {("cube", r.zone, r.source, r.category, r.hour): int(r.n) for r in self.cube}
        for e in self.events:
            out.update({("event", e.id, label): v for label, v in e.counts.items() if isinstance(v, int)})
        return out


Cell = tuple[str, str, int, int, float]
Anomaly = tuple[str, str, int, int, int, float]


def plant_of(cells: list[Cell], anomalies: list[Anomaly], windows: list[int]) -> Plant:
    plant = Plant()
    totals: dict[tuple[str, str, int], float] = {}
    for zone, category, day, hour, n in cells:
        key = (zone, category, P0 + day * DAY + hour * HOUR)
        totals[key] = totals.get(key, 0) + n
    plant.cube = [CubeRow(z, t, "police", c, n) for (z, c, t), n in totals.items()]
    for zone, category, day, hour, observed, expected in anomalies:
        t = P0 + day * DAY + hour * HOUR
        if totals.get((zone, category, t)) != observed:
            continue  # an anomaly is always on an observed hour
        plant.anomalies.append({"zone": zone, "hour": t, "source": "police", "category": category,
                                "observed": float(observed), "expected": expected,
                                "p": poisson_sf(float(observed), expected)})  # fmt: skip
    start = P0 + 8 * HOUR
    for i, n in enumerate(windows):
        ws = start + 60 * i
        plant.events.append(event(id=wire.new_event_id(ws), window_start=ws, window_s=60, k=3,
                                  counts={"person": n}, mean_counts={"person": n / 2}))  # fmt: skip
    return plant


@pytest.fixture
def analyst(tmp_path: Path) -> Iterator[tuple[TestClient, Plant]]:
    with Hub(tmp_path, plant_of(CELLS, ANOMALIES, WINDOWS)) as pair:
        yield pair


def plant_store(store: Any, plant: Plant) -> None:
    """Through the store, as the importer, the learner and the ingest write them."""
    store.record_import("police", f"{time.monotonic_ns():064x}"[-64:], "planted.csv", {}, plant.cube, 0)
    if plant.anomalies:
        store.add_anomalies(plant.anomalies, 0.0)
    store.add_events(plant.events, float(P0 + 9 * HOUR))
    store.add_user("ana", hash_password(PASSWORD), "analyst", time.time())


def log_in(client: httpx.Client) -> None:
    """One analyst, logged in with a password like any user."""
    login = client.post("/v1/auth/token", data={"username": "ana", "password": PASSWORD}).json()
    client.headers.update(
        {"Authorization": f"Bearer {login['access_token']}", "X-Purpose": "disclosure audit"}
    )


class Hub:
    """The real app (SQLite store), planted through the store, and an analyst's session."""

    def __init__(self, tmp_path: Path, plant: Plant) -> None:
        db = tmp_path / f"hub-{time.monotonic_ns()}.sqlite"
        self.app = create_app(HubSettings(db=str(db), ingest=False, k=K, rate=100_000))
        self.plant = plant

    def __enter__(self) -> tuple[TestClient, Plant]:
        self.client = TestClient(self.app).__enter__()
        plant_store(self.app.state.store, self.plant)
        log_in(self.client)
        return self.client, self.plant

    def __exit__(self, *exc: object) -> None:
        self.client.__exit__(*exc)


RANGES: list[tuple[int | None, int | None]] = [
    (None, None),
    (P0, P0 + 7 * DAY),  # the local week
    (T0 + 3 * DAY, T0 + 10 * DAY),  # Thursday to Thursday, UTC: the old epoch-aligned week
    (P0 + 3 * DAY, P0 + 7 * DAY),  # Thursday to Sunday, local
    (P0 + 11 * HOUR, P0 + 12 * HOUR),  # one small hour
    (P0 + 1800, P0 + 2 * DAY + 7),  # unaligned
]
LEVELS = ("hour", "day", "week", "month")
#: The same questions in ISO 8601 (issue 20): a local week, and January as an analyst writes it.
ISO_RANGES: list[tuple[str | None, str | None]] = [
    ("2026-01-05T00:00:00+01:00", "2026-01-12T00:00:00+01:00"),
    ("2026-01-01", "2026-02-01"),
]
#: Page size for the cube: small, so that the analyst also reads it page by page through `next` links.
PAGE = 10


Range = tuple[int | None, int | None]


def collect(
    client: httpx.Client, plant: Plant, *, full: bool = True, ranges: list[Range] | None = None
) -> Knowledge:
    """Everything one analyst can fetch, as facts on the planted cells (``ranges``: RANGES by default)."""
    ranges = RANGES if ranges is None else ranges
    know = Knowledge()
    for key in plant.truth():
        know.unknown(key)
    zones = [None, A, C, AREA] if full else [None]
    categories = [None, "theft", "assault"] if full else [None]
    for bucket in LEVELS:
        for since, until in [*ranges, *(ISO_RANGES if full else [])]:
            at = (since if isinstance(since, int) else None, until if isinstance(until, int) else None)
            for zone in zones:
                for category in categories:
                    q = {"bucket": bucket, "since": since, "until": until, "zone": zone, "category": category}
                    rows = _cube_pages(client, {k: v for k, v in q.items() if v is not None}, full)
                    cube_facts(know, rows, *at, f"cube {q}")
            params = {
                k: v for k, v in {"bucket": bucket, "since": since, "until": until}.items() if v is not None
            }
            r = client.get("/v1/exports/cube.csv", params=params)
            if r.status_code == 200:
                cube_facts(know, list(csv.DictReader(io.StringIO(r.text))), *at, f"csv {params}")
            r = client.get("/v1/exports/cube.geojson", params=params)
            if r.status_code == 200:
                rows = [f["properties"] for f in r.json()["features"]]
                cube_facts(know, rows, *at, f"geojson {params}")
            r = client.get("/v1/exports/cube.parquet", params=params)
            if r.status_code == 200:
                cube_facts(know, _parquet_rows(r.content), *at, f"parquet {params}")
    for since, until in ranges:
        params = {k: v for k, v in {"since": since, "until": until}.items() if v is not None}
        anomaly_facts(know, client.get("/v1/anomalies", params=params).json()["data"], "anomalies")
    know.forecasts = forecast_answers(client)
    events = _all_events(client)
    event_facts(know, events, "events")
    windows = {("event", e["id"], label): (e["site"], e["device"], e["zone"], e["window_start"])
               for e in events for label in e.get("counts", {})}  # fmt: skip
    rollup_facts(know, _all_rollups(client), windows, "rollups")
    for kind in ("CrowdFlowObserved", "TrafficFlowObserved"):
        for entity in client.get("/v1/exports/ngsi-ld", params={"type": kind}).json():
            value = (entity.get("peopleCount") or entity.get("intensity") or {}).get("value")
            assert value is None or value >= K, entity
    return know


def _cube_pages(client: httpx.Client, params: dict[str, Any], paged: bool) -> list[dict[str, Any]]:
    """Every row of one cube question, page by page through the `next` links when ``paged``."""
    r = client.get("/v1/cube", params={**params, "limit": PAGE} if paged else params)
    if r.status_code != 200:
        return []
    body = r.json()
    rows = list(body["data"])
    while body["next"] is not None:
        body = client.get(body["next"]).json()
        rows += body["data"]
    return rows


def _parquet_rows(content: bytes) -> list[dict[str, Any]]:
    """The Parquet export's rows with epoch-second times, as the CSV's."""
    import pyarrow.parquet as pq

    cols = pq.read_table(io.BytesIO(content)).to_pylist()
    return [{**r, "start": int(r["start"].timestamp()), "end": int(r["end"].timestamp())} for r in cols]


def forecast_answers(client: httpx.Client) -> dict[int, dict[str, float]]:
    """Every forecast an analyst can fetch: expected incidents per cell, for each horizon the API takes.

    Not linear facts on the counts (a model's output); ``tests/test_forecast_privacy.py`` shows
    instead that none of them moves when a suppressed count does.
    """
    out: dict[int, dict[str, float]] = {}
    for horizon in (1, 6, 24, 168):
        r = client.get("/v1/forecast", params={"horizon": horizon, "limit": 100_000})
        assert r.status_code == 200, r.text
        out[horizon] = {row["zone"]: row["expected"] for row in r.json()["data"]}
    return out


def _all_events(client: httpx.Client) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        body = client.get("/v1/events", params=params).json()
        out += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return out


def _all_rollups(client: httpx.Client) -> list[dict[str, Any]]:
    """Every roll-up, two at a time through the cursors (issue 20)."""
    body = client.get("/v1/rollups", params={"limit": 2}).json()
    rows = list(body["data"])
    while body["next"] is not None:
        body = client.get(body["next"]).json()
        rows += body["data"]
    return rows


def disclosures(know: Knowledge, truth: dict[Any, int], *, cross_check: bool = False) -> list[str]:
    """Every planted cell under k whose count the served numbers pin down (LP, HiGHS).

    With ``cross_check``, the attacker's own exact integer search must find the same interval.
    """
    found = []
    for key, value in sorted(truth.items(), key=str):
        if not 1 <= value < K:
            continue
        lo, hi = know.interval(key)
        if cross_check:
            assert know.exact_interval(key) == (lo, hi), (key, know.exact_interval(key), lo, hi)
        assert lo <= value <= hi, (key, value, lo, hi)  # the facts are true ones
        inside = range(max(lo, 1), min(hi, K - 1) + 1)
        if lo == hi or len(inside) == 1:
            found.append(f"{key} = {value}: [{lo}, {hi}]")
    return found


def test_one_analyst_pins_down_no_hidden_cell(analyst: tuple[TestClient, Plant]) -> None:
    client, plant = analyst
    know = collect(client, plant)
    assert not know.contradictions, know.contradictions
    assert len(know.eqs) >= 15  # the attacker did learn a lot: served hours, days, weeks, months
    assert disclosures(know, plant.truth(), cross_check=True) == []
    # Month answers (issue 20) were among the facts: asked in ISO 8601, and as Parquet.
    month = client.get("/v1/cube", params={"bucket": "month", "since": "2026-01-01", "until": "2026-02-01"})
    assert [r["start_iso"] for r in month.json()["data"] if r["n"] is not None][:1] == [
        "2025-12-29T00:00:00+01:00"
    ]
    parquet = client.get("/v1/exports/cube.parquet", params={"bucket": "month"})
    assert any(r["n"] is not None for r in _parquet_rows(parquet.content))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cells=st.lists(
        st.tuples(
            st.sampled_from([A, C]),
            st.sampled_from(["theft", "assault"]),
            st.integers(0, 9),
            st.integers(0, 23),
            st.integers(1, 9),
        ),
        min_size=1,
        max_size=14,
    ),
    windows=st.lists(st.integers(3, 9), min_size=1, max_size=5),
    ranges=st.lists(
        st.tuples(st.integers(-2 * 24, 12 * 24), st.integers(1, 10 * 24)).map(
            lambda r: (P0 + r[0] * HOUR + 1800 * (r[0] % 2), P0 + (r[0] + r[1]) * HOUR)
        ),
        max_size=3,
    ),
)
def test_no_planted_data_lets_the_analyst_pin_a_cell(
    tmp_path: Path, cells: list[tuple[str, str, int, int, int]], windows: list[int], ranges: list[Range]
) -> None:
    """Planted data and the analyst's ranges (aligned or not, any length) both drawn by hypothesis."""
    anomalies = [(z, c, d, h, n, 0.05) for z, c, d, h, n in cells[:3] if n >= 3]
    plant = plant_of([(z, c, d, h, float(n)) for z, c, d, h, n in cells], anomalies, windows)
    with Hub(tmp_path, plant) as (client, planted):
        know = collect(client, planted, full=False, ranges=[(None, None), *ranges])
        assert disclosures(know, planted.truth()) == []


def test_weeks_start_on_monday_in_the_city_and_ranges_widen(analyst: tuple[TestClient, Plant]) -> None:
    client, _ = analyst
    # Thursday to Thursday, UTC: the old API served two partial weeks; now two whole local weeks.
    body = client.get(
        "/v1/cube", params={"bucket": "week", "since": T0 + 3 * DAY, "until": T0 + 10 * DAY}
    ).json()
    assert (body["since"], body["until"]) == (P0, P0 + 14 * DAY)
    starts = {r["start"] for r in body["data"]}
    assert starts == {P0, P0 + 7 * DAY}  # Monday 00:00 Europe/Paris
    assert all(r["end"] - r["start"] == 7 * DAY for r in body["data"])
    month = client.get("/v1/cube", params={"bucket": "month", "zone": A, "category": "theft"}).json()["data"]
    assert [(r["start"], r["n"]) for r in month] == [(P0 - 7 * DAY, 71.0)]  # the ISO weeks of January 2026


def test_no_route_reads_aggregates_around_the_layer() -> None:
    """Routes get ProtectedTables: none calls the store's aggregate queries itself."""
    routes = Path(__file__).resolve().parent.parent / "hub" / "api" / "routes"
    for path in routes.glob("*.py"):
        text = path.read_text()
        for query in ("query_cube(", "list_anomalies("):
            assert query not in text, f"{path.name} calls store.{query} around hub/disclosure"
        # Per-window counts: every route reading them applies the floor.
        assert "list_events" not in text or "floor_event" in text, path.name
        assert "list_rollups" not in text or "protect_rollup" in text, path.name
    from hub.disclosure.tables import ProtectedTable

    with pytest.raises(TypeError, match=r"hub\.disclosure"):
        ProtectedTable((), K)


def test_ingest_quarantines_a_small_device_k_and_stores_alerts_on_the_grid(
    tmp_path: Path, broker: LocalBroker
) -> None:
    """Through a real Mosquitto and the real ingest: k = 1 is refused with the reason, k = 3 is stored,
    and an alert is stored with its arrival on the alerts' 10 s grid, not the second it came."""
    from hub.ingest import Ingestor
    from hub.storage import SQLiteStore
    from tests.test_e2e import publisher
    from vigie.mqtt import BrokerConfig

    site = "privacy"
    store = SQLiteStore(tmp_path / "hub.sqlite")
    ingest = Ingestor(BrokerConfig(host="127.0.0.1", port=broker.port), store, min_device_k=3)
    ingest.start()
    try:
        assert ingest.wait_connected(10)
        pub = publisher(broker.port)
        low = event(site=site, k=1)
        ok = event(site=site, k=3, counts={"person": 4}, mean_counts={"person": 2.0})
        fired = int(time.time()) // 10 * 10
        alert = wire.Alert(site=site, device="cam-01", id=wire.new_event_id(fired), rule="crowd_density",
                           zone="quai", ts=fired, value=9.0, threshold=5.0, model="m@1")  # fmt: skip
        for e in (low, ok, alert):
            pub.publish(
                wire.topic(site, "cam-01", wire.Channel.EVENT), wire.encode(e), qos=1
            ).wait_for_publish(5)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (store.count_events() < 2 or not store.list_quarantine()):
            time.sleep(0.1)
        pub.disconnect()
    finally:
        ingest.stop()
    rows = store.list_quarantine()
    assert [r["field"] for r in rows] == ["k"]
    assert "counted with k = 1, below the hub's minimum 3" in rows[0]["reason"]
    stored = {e["id"]: e for e in store.list_events(EventQuery(site=site))[0]}
    assert set(stored) == {ok.id, alert.id}
    assert stored[alert.id]["received_at"] % 10 == 0
    assert stored[ok.id]["received_at"] % 10 != 0  # windows keep their arrival (not a firing time)


def test_the_attack_under_real_uvicorn_with_the_live_stream(tmp_path: Path) -> None:
    """The same collection over HTTP from a real uvicorn, plus the live stream while events arrive."""
    import threading

    import uvicorn

    from vigie.netutil import free_port

    plant = plant_of(CELLS, ANOMALIES, WINDOWS)
    app = create_app(HubSettings(db=str(tmp_path / "hub.sqlite"), ingest=False, k=K, rate=100_000))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        plant_store(app.state.store, plant)
        live = plant_of([], [], [4, 8, 3])
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            log_in(client)
            later = threading.Timer(1.5, lambda: app.state.store.add_events(live.events, time.time()))
            streamed: list[dict[str, Any]] = []
            with client.stream("GET", "/v1/events/stream", params={"max_s": 4}) as r:
                later.start()
                streamed = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
            assert {e["id"] for e in streamed} == {e.id for e in live.events}
            assert all(v == f"<{K}" or v >= K for e in streamed for v in e["counts"].values())
            plant.events += live.events
            know = collect(client, plant, full=False)
            event_facts(know, streamed, "stream")
        assert disclosures(know, plant.truth()) == []
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@settings(max_examples=150, deadline=None)
@given(
    hours=st.dictionaries(st.integers(0, 24 * 14 - 1), st.integers(1, 9), min_size=1, max_size=10),
    extra=st.sets(st.integers(0, 40), max_size=4),
)
def test_the_layer_bounds_every_hidden_hour_as_the_exact_solver_does(
    hours: dict[int, int], extra: set[int]
) -> None:
    """On one series' tree, the layer's interval for each hidden hour is the attacker's exact one."""
    from hub.disclosure.calendar import CityCalendar
    from hub.disclosure.tree import _Tree

    cal = CityCalendar()
    tree = _Tree({P0 + h * HOUR: float(n) for h, n in hours.items()}, cal)
    nodes = sorted(tree.value)
    hidden = {x for x in nodes if tree.value[x] < K} | {nodes[i % len(nodes)] for i in extra}
    lo, hi = tree.bounds(hidden)
    know = Knowledge()
    leaves = {x: [h for h in nodes if h[0] == "hour" and _under(tree, h, x)] for x in nodes}
    for h in leaves:
        if h[0] == "hour":
            know.unknown(h)
    for x in nodes:
        if x not in hidden:
            know.equal(leaves[x], tree.value[x], str(x))
    for h in (x for x in nodes if x[0] == "hour" and x in hidden):
        exact = know.interval(h)
        assert (lo[h], min(hi[h], 10_000)) == exact, (h, exact, lo[h], hi[h])


def _under(tree: Any, leaf: Any, node: Any) -> bool:
    while leaf != node:
        if leaf not in tree.parent:
            return False
        leaf = tree.parent[leaf]
    return True
