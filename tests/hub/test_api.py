"""REST API contract, with the ingest switched off (the end-to-end test covers it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hub.api.main import create_app
from hub.config import HubSettings
from hub.storage import Retention
from tests.test_wire import event


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    # Authentication off: these are the data contract's tests (tests/hub/test_access.py covers access).
    # Events dated 2023 are kept: the purge job (its start-up run, in its own thread) races them otherwise.
    keep = Retention(events_days=None, rollups_days=None)
    app = create_app(
        HubSettings(db=str(tmp_path / "hub.sqlite"), ingest=False, auth=False, k=3, retention=keep)
    )
    with TestClient(app) as c:
        c.app.state.store.add_events([event(zone=f"z{i}") for i in range(5)], 1.0)  # type: ignore[attr-defined]
        yield c


def test_healthz(client: TestClient) -> None:
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["store"] is True
    assert body["ingest"] is None


def test_events_pagination(client: TestClient) -> None:
    first = client.get("/v1/events", params={"limit": 3}).json()
    assert first["count"] == 3
    second = client.get("/v1/events", params={"limit": 3, "cursor": first["next_cursor"]}).json()
    assert second["count"] == 2
    assert second["next_cursor"] is None
    zones = {e["zone"] for e in first["data"] + second["data"]}
    assert zones == {f"z{i}" for i in range(5)}
    assert first["data"][0]["counts"] == {"bus": "<3", "person": 4}  # under the hub's k: floored


def test_bad_parameters_get_422_naming_the_parameter(client: TestClient) -> None:
    r = client.get("/v1/events", params={"limit": 5000})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "limit"]
    r = client.get("/v1/events", params={"cursor": "abc"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "cursor"]


def test_devices_and_quarantine(client: TestClient) -> None:
    devices = client.get("/v1/devices").json()
    assert devices["count"] == 1
    assert devices["data"][0]["events"] == 5
    assert client.get("/v1/quarantine").json() == {
        "data": [], "count": 0, "total": 0, "next_cursor": None, "next": None
    }  # fmt: skip


def test_openapi_documents_the_routes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/v1/events", "/v1/devices", "/healthz", "/v1/quarantine"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_every_event_kind_is_served_and_filterable(client: TestClient) -> None:
    from tests.test_wire import WINDOW
    from vigie import wire

    line = wire.LineCountEvent(
        site="vieux-port", device="cam-01", id=wire.new_event_id(WINDOW), line="door", window_start=WINDOW,
        window_s=10, forward={"person": 3}, backward={"person": "<2"}, k=2, model="m@1",
    )  # fmt: skip
    alert = wire.Alert(
        site="vieux-port", device="cam-01", id=wire.new_event_id(WINDOW), rule="wrong_way", line="door",
        ts=WINDOW, value=1.0, threshold=1.0, model="m@1",
    )  # fmt: skip
    client.app.state.store.add_events([line, alert], 2.0)  # type: ignore[attr-defined]
    body = client.get("/v1/events", params={"zone": "door"}).json()
    assert {e["kind"] for e in body["data"]} == {"line_count", "alert"}
    (served_line,) = client.get("/v1/events", params={"kind": "line_count"}).json()["data"]
    assert served_line["backward"] == {"person": "<3"}  # the hub's floor, whatever the device's k
    (served_alert,) = client.get("/v1/events", params={"kind": "alert"}).json()["data"]
    assert served_alert["rule"] == "wrong_way"
    assert served_alert["line"] == "door"


def test_rollups_endpoint(client: TestClient) -> None:
    body = client.get("/v1/rollups", params={"metric": "peak:person"}).json()
    assert body["count"] == 5  # five zones, one hour each
    assert {r["place"] for r in body["data"]} == {f"z{i}" for i in range(5)}
    assert all(r["max"] == 4 and r["mean"] == 4 for r in body["data"])
    assert client.get("/v1/rollups", params={"metric": "peak:*", "place": "z1"}).json()["count"] == 2


def test_healthz_sees_separate_ingest_processes_through_the_store(client: TestClient) -> None:
    import time

    store = client.app.state.store  # type: ignore[attr-defined]
    store.record_ingest_status("vigie-hub-ingest-0", True, {"received": 10, "stored": 9}, time.time())
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["ingest"]["workers"][0]["stored"] == 9
    # A worker that has not reported for a while does not count as connected.
    store.record_ingest_status("vigie-hub-ingest-0", True, {"received": 10, "stored": 9}, time.time() - 120)
    assert client.get("/healthz").json()["status"] == "degraded"
