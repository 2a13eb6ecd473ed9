"""Issue 20, the analyst's API: cursors on every list (the cube past 10,000 rows), ISO 8601, Parquet."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import h3
import pytest
from fastapi.testclient import TestClient

from hub.api.main import create_app
from hub.config import HubSettings
from hub.storage import CubeRow
from tests.test_wire import event
from vigie import wire

K = 3
P0 = 1_767_567_600  # Monday 2026-01-05 00:00 in Paris
HOUR = 3600
#: 12 zones × 1,000 hours = 12,000 hour rows, every one at least k: none suppressed, none lost.
ZONES = [f"h3:{c}" for c in sorted(h3.grid_disk(h3.latlng_to_cell(43.2965, 5.3698, 8), 2))[:12]]
HOURS = 1000


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("analyst") / "hub.sqlite"
    app = create_app(HubSettings(db=str(db), ingest=False, auth=False, k=K))
    with TestClient(app) as c:
        c.headers["X-Purpose"] = "analyst API contract tests"
        store = app.state.store
        cube = [
            CubeRow(z, P0 + h * HOUR, "police", "theft", float(K + (h % 4)))
            for z in ZONES
            for h in range(HOURS)
        ]
        store.record_import("police", "ab" * 32, "planted.csv", {}, cube, 0)
        # Roll-ups are maintained at ingest: 25 windows in 25 hours, 2 places each.
        events = [
            event(id=wire.new_event_id(P0 + h * HOUR), zone=zone, window_start=P0 + h * HOUR)
            for h in range(25)
            for zone in ("quai", "parvis")
        ]
        store.add_events(events, float(P0))
        yield c


def _all_pages(
    client: TestClient, path: str, params: dict[str, Any], data: str = "data"
) -> tuple[list[dict[str, Any]], int]:
    """Every row, by following `next` from the first page; and how many pages that took."""
    body = client.get(path, params=params).json()
    rows, pages = list(body[data]), 1
    while body["next"] is not None:
        assert body["next_cursor"] in body["next"]
        body = client.get(body["next"]).json()
        rows += body[data]
        pages += 1
    assert body["next_cursor"] is None
    return rows, pages


def test_the_cube_pages_past_10000_rows_with_a_next_link(client: TestClient) -> None:
    first = client.get("/v1/cube", params={"bucket": "hour"}).json()
    assert first["count"] == 10_000
    assert first["next_cursor"] is not None, "the cube was cut at 10,000 rows without a cursor"
    rows, pages = _all_pages(client, "/v1/cube", {"bucket": "hour"})
    assert pages == 2
    keys = [(r["start"], r["zone"], r["source"], r["category"]) for r in rows]
    assert len(keys) == len(set(keys)) == len(ZONES) * HOURS  # every row once, none lost
    assert keys == sorted(keys)
    assert sum(r["n"] for r in rows) == sum(K + (h % 4) for h in range(HOURS)) * len(ZONES)


def test_small_pages_give_the_same_rows_as_one_big_page(client: TestClient) -> None:
    params = {"bucket": "day", "zone": ",".join(ZONES[:3])}
    whole = client.get("/v1/cube", params={**params, "limit": 100_000}).json()
    assert whole["next_cursor"] is None
    paged, pages = _all_pages(client, "/v1/cube", {**params, "limit": 17})
    assert pages == -(-whole["count"] // 17)
    assert paged == whole["data"]


def test_month_buckets_are_whole_iso_weeks_with_iso_dates(client: TestClient) -> None:
    body = client.get("/v1/cube", params={"bucket": "month", "zone": ZONES[0], "since": "2026-01-05"}).json()
    first, second = body["data"][:2]
    # January 2026 in whole ISO weeks: from Monday 29 December (Thursday 1 January is in January) to
    # Monday 2 February, in Paris; since is widened to the month's start.
    assert (first["start_iso"], first["end_iso"]) == (
        "2025-12-29T00:00:00+01:00",
        "2026-02-02T00:00:00+01:00",
    )
    assert first["n"] == sum(K + (h % 4) for h in range(28 * 24))  # the data starts on 5 January
    assert body["since_iso"] == "2025-12-29T00:00:00+01:00"
    assert (second["start_iso"], second["end_iso"]) == (
        "2026-02-02T00:00:00+01:00",
        "2026-03-02T00:00:00+01:00",
    )
    assert second["n"] == sum(K + (h % 4) for h in range(28 * 24, HOURS))


def test_rollups_page_with_a_keyset_cursor(client: TestClient) -> None:
    whole = client.get("/v1/rollups", params={"limit": 10_000}).json()
    assert whole["count"] > 40
    assert whole["next_cursor"] is None
    first = client.get("/v1/rollups", params={"limit": 7}).json()
    assert first["count"] == 7
    assert first["next_cursor"] is not None, "roll-ups cut without a cursor"
    paged, _ = _all_pages(client, "/v1/rollups", {"limit": 7})
    assert paged == whole["data"]
    assert paged[0]["hour_iso"] == "2026-01-04T23:00:00Z"


@pytest.mark.parametrize(
    "path",
    ["/v1/cube", "/v1/rollups", "/v1/anomalies", "/v1/forecast", "/v1/devices", "/v1/quarantine", "/v1/zones",
     "/v1/audit", "/v1/users", "/v1/campaigns", "/v1/exports/ngsi-ld"],
)  # fmt: skip
def test_every_list_refuses_a_cursor_it_never_returned(client: TestClient, path: str) -> None:
    for cursor in ("abc", "W10", "WyJ4Il0", "²", "x" * 600, "WzEsMiwzXQ", "Wy0xXQ"):
        r = client.get(path, params={"cursor": cursor})
        assert r.status_code == 422, (path, cursor, r.status_code, r.text)
        assert r.json()["detail"][0]["loc"] == ["query", "cursor"]
        assert "cursor" in r.text


def test_the_events_cursor_error_says_the_fix_too(client: TestClient) -> None:
    for cursor in ("abc", "²", "99999999999999999999"):
        r = client.get("/v1/events", params={"cursor": cursor})
        assert r.status_code == 422, r.text
        detail = r.json()["detail"][0]
        assert detail["loc"] == ["query", "cursor"]
        assert "pass the previous page's `next_cursor` unchanged" in detail["msg"], detail


@pytest.mark.parametrize(
    "path", ["/v1/devices", "/v1/zones", "/v1/forecast", "/v1/users", "/v1/campaigns", "/v1/audit"]
)
def test_every_list_has_a_next_field(client: TestClient, path: str) -> None:
    body = client.get(path, params={"limit": 1}).json()
    assert "next" in body, body
    assert "next_cursor" in body, body


def test_zones_page(client: TestClient) -> None:
    rows, pages = _all_pages(client, "/v1/zones", {"limit": 5}, "features")
    assert pages == 3
    assert sorted(f["id"] for f in rows) == sorted(ZONES)


def test_iso_8601_and_epoch_seconds_give_the_same_answer(client: TestClient) -> None:
    epoch = {"bucket": "day", "zone": ZONES[1], "since": P0 + 2 * 86_400, "until": P0 + 5 * 86_400}
    iso = {**epoch, "since": "2026-01-07T00:00:00+01:00", "until": "2026-01-09T23:00:00Z"}
    a, b = client.get("/v1/cube", params=epoch).json(), client.get("/v1/cube", params=iso).json()
    assert a["count"] == 3
    assert a["data"] == b["data"]
    # Without an offset, a date or time is the city's: 7 January is Paris's midnight, like P0 + 2 days.
    local = {**epoch, "since": "2026-01-07", "until": "2026-01-10T00:00"}
    assert client.get("/v1/cube", params=local).json()["data"] == a["data"]
    events = client.get("/v1/events", params={"since": "2026-01-05T00:00:00+01:00", "until": P0 + 2 * HOUR})
    assert {e["window_start_iso"] for e in events.json()["data"]} == {
        "2026-01-04T23:00:00Z",
        "2026-01-05T00:00:00Z",
    }


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", "2026-01-05T25:00", "-5", "1e9", "2200-01-01"])
def test_a_bad_time_is_a_422_naming_the_parameter_and_the_forms(client: TestClient, value: str) -> None:
    r = client.get("/v1/cube", params={"since": value})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["query", "since"]
    assert "ISO 8601" in detail["msg"] or "outside" in detail["msg"], detail


@pytest.mark.parametrize(
    "path",
    ["/v1/cube", "/v1/rollups", "/v1/anomalies", "/v1/events", "/v1/audit", "/v1/exports/cube.csv",
     "/v1/exports/cube.parquet", "/v1/exports/cube.geojson", "/v1/exports/ngsi-ld"],
)  # fmt: skip
def test_an_inverted_or_empty_range_is_a_422_not_an_empty_answer(client: TestClient, path: str) -> None:
    # Swapped dates are the commonest slip; an empty 200 would read as "nothing happened".
    for since, until in (("2026-03-01", "2026-01-01"), ("2026-01-05", "2026-01-05"), (P0 + 7200, P0)):
        r = client.get(path, params={"since": since, "until": until})
        assert r.status_code == 422, (path, since, until, r.status_code, r.text[:200])
        detail = r.json()["detail"][0]
        assert detail["loc"] == ["query", "until"]
        assert "not after since" in detail["msg"], detail
        assert "swap" in detail["msg"], detail
    assert client.get(path, params={"since": "2026-01-05", "until": "2026-01-06"}).status_code == 200


def test_parquet_export_matches_the_csv(client: TestClient) -> None:
    import csv

    import pyarrow.parquet as pq

    r = client.get("/v1/exports/cube.parquet", params={"bucket": "week"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(r.content))
    assert table.schema.metadata[b"vigie.k"] == str(K).encode()
    assert table.schema.field("start").type.tz == "Europe/Paris"  # Parquet stores it in ms
    text = client.get("/v1/exports/cube.csv", params={"bucket": "week"}).text
    from_csv = [
        (row["zone"], int(row["start"]), float(row["n"])) for row in csv.DictReader(io.StringIO(text))
    ]
    cols = table.to_pydict()
    from_parquet = [
        (z, int(s.timestamp()), n) for z, s, n in zip(cols["zone"], cols["start"], cols["n"], strict=True)
    ]
    assert sorted(from_parquet) == sorted(from_csv)
    assert len(from_csv) == len(ZONES) * 6  # 1,000 hours: 5 whole weeks and a partial one per zone
    # A spreadsheet user reads dates, not epoch seconds: ISO 8601 in the city's zone beside them.
    first = next(csv.DictReader(io.StringIO(text)))
    assert first["start_iso"] == "2026-01-05T00:00:00+01:00", first
    assert first["end_iso"] == "2026-01-12T00:00:00+01:00", first


def test_ngsi_ld_pages_with_a_link_header(client: TestClient) -> None:
    r = client.get("/v1/exports/ngsi-ld", params={"limit": 10})
    assert 'rel="next"' in r.headers["link"]
    seen = len(r.json())
    link = r.headers["link"].split(">")[0][1:]
    while link:
        r = client.get(link)
        seen += len(r.json())
        link = r.headers["link"].split(">")[0][1:] if "link" in r.headers else ""
    assert seen == len(client.get("/v1/exports/ngsi-ld", params={"limit": 10_000}).json())
    assert seen > 10
