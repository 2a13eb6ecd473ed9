"""Online learning on the cube: baselines, anomalies, forecasts, restarts, the API."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import math
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from hub.fusion.importer import import_file
from hub.fusion.learning import HOUR, LearnerParams, OnlineModel, hour_of_week, poisson_sf
from hub.fusion.observation import load_mapping
from hub.fusion.service import learn_pending, load_model
from hub.fusion.zones import ZoneIndex
from hub.storage import SQLiteStore
from tests.conftest import ROOT, SHARED, need

HOUSTON = SHARED / "data" / "incidents" / "houston_crime_2010_ggmap.csv.gz"
MAPPINGS = ROOT / "hub" / "fusion" / "mappings"
T0 = int(dt.datetime(2026, 1, 5, tzinfo=dt.UTC).timestamp())  # a Monday, 00:00 UTC


def test_poisson_tail() -> None:
    assert poisson_sf(0, 3.0) == 1.0
    assert poisson_sf(1, 2.0) == pytest.approx(1 - math.exp(-2))
    assert poisson_sf(3, 1.0) == pytest.approx(1 - math.exp(-1) * 2.5)
    assert poisson_sf(40, 2.0) < 1e-30
    assert poisson_sf(5, 0.0) == 0.0
    assert hour_of_week(T0) == 0
    assert hour_of_week(T0 + 167 * HOUR) == 167


def _background(model: OnlineModel, weeks: int, rng: np.random.Generator) -> None:
    cells = ["883968152bfffff", "8839681427fffff", "8839680281fffff"]
    for h in range(weeks * 168):
        hour = T0 + h * HOUR
        rate = 0.6 if 8 <= (h % 24) < 20 else 0.1  # busier by day
        counts = {(c, "police", "noise"): float(n) for c in cells if (n := rng.poisson(rate))}
        model.update_hour(hour, counts)


def test_burst_raises_an_anomaly_and_a_forecast_that_decays() -> None:
    rng = np.random.default_rng(1)
    # θ fixed here (the next test checks how it is learnt).
    model = OnlineModel(params=LearnerParams(alert_p=1e-4, theta=0.3, learning_rate=0.0))
    _background(model, 4, rng)
    assert model.profile[0, 14] > model.profile[0, 3]  # learnt: afternoons are busier than nights
    before = model.forecast(24)
    burst_hour = model.watermark + HOUR  # type: ignore[operator]
    found = model.update_hour(burst_hour, {("883968152bfffff", "police", "noise"): 9.0})
    assert len(found) == 1
    assert found[0]["zone"] == "h3:883968152bfffff"
    assert found[0]["p"] < 1e-4
    after = model.forecast(24)
    # The self-exciting term: risk rises after a burst, there and not elsewhere.
    # (The forecast window moved by an hour for every cell: compare with a cell that saw nothing.)
    rise = after["883968152bfffff"] - before["883968152bfffff"]
    drift = after["8839681427fffff"] - before["8839681427fffff"]
    assert rise - drift > 0.3
    neighbour = next(c for c in after if c not in {"883968152bfffff", "8839681427fffff", "8839680281fffff"})
    assert after[neighbour] > 0  # and spills over to the ring of neighbours
    for h in range(2, 24 * 21):
        model.update_hour(burst_hour + h * HOUR, {})
    assert model.forecast(24)["883968152bfffff"] < after["883968152bfffff"]  # and fades


def _self_exciting(clustered: bool, seed: int = 1, weeks: int = 12) -> float:
    """θ learnt from burglary-like data: near-repeats (each event raises the next day's risk) or not."""
    rng = np.random.default_rng(seed)
    # Cells on their own: no smoothing towards, and no spill-over to, neighbours that see nothing
    # (θ weighs both a cell's own past and its neighbours', and would learn the neighbours' silence).
    model = OnlineModel(params=LearnerParams(smooth=0.0, neighbour_weight=0.0))
    cells = ["883968152bfffff", "8839681427fffff", "8839680281fffff"]
    recent = dict.fromkeys(cells, 0.0)
    for h in range(weeks * 168):
        counts = {}
        for c in cells:
            n = int(rng.poisson(0.05 + (0.8 * recent[c] / 24 if clustered else 0.0)))
            recent[c] = recent[c] * math.exp(-1 / 24) + n
            if n:
                counts[(c, "police", "burglary")] = float(n)
        model.update_hour(T0 + h * HOUR, counts)
    return model.theta


def test_theta_follows_the_data() -> None:
    # Near-repeats push the self-exciting weight up; independent events push it down.
    assert _self_exciting(True) > LearnerParams().theta > _self_exciting(False)


def test_background_raises_no_anomaly() -> None:
    rng = np.random.default_rng(2)
    model = OnlineModel()
    found = []
    for h in range(6 * 168):
        n = int(rng.poisson(0.5))
        counts = {("883968152bfffff", "police", "noise"): float(n)} if n else {}
        found += model.update_hour(T0 + h * HOUR, counts)
    assert found == []


def test_excluded_categories_do_not_train_the_forecast() -> None:
    a, b = OnlineModel(), OnlineModel(excluded={"police:police_check"})
    for h in range(400):
        counts = {("883968152bfffff", "police", "theft"): 1.0} if h % 5 == 0 else {}
        checks = {("8839681427fffff", "police", "police_check"): 4.0} if h % 2 == 0 else {}
        a.update_hour(T0 + h * HOUR, counts | checks)
        b.update_hour(T0 + h * HOUR, counts | checks)
    assert a.forecast(168)["8839681427fffff"] > 1.0  # patrols' own checks make a "hot spot"
    assert b.forecast(168)["8839681427fffff"] < 0.2  # unless excluded from training
    assert (
        b.level[b.cells.index("8839681427fffff"), b.categories.index("police:police_check")] > 0
    )  # still seen


def _split_houston(tmp_path: Path) -> tuple[Path, Path]:
    """Houston 2010 in two files by time: before and after 2010-03-15."""
    cut = "2010-03-15"
    first, second = tmp_path / "a.csv.gz", tmp_path / "b.csv.gz"
    with gzip.open(need(HOUSTON), "rt", encoding="utf-8") as src, gzip.open(first, "wt") as fa, \
            gzip.open(second, "wt") as fb:  # fmt: skip
        reader = csv.reader(src)
        header = next(reader)
        wa, wb = csv.writer(fa), csv.writer(fb)
        wa.writerow(header)
        wb.writerow(header)
        for row in reader:
            (wa if row[0] < cut else wb).writerow(row)
    return first, second


def test_learning_survives_a_restart_and_matches_one_run(tmp_path: Path) -> None:
    mapping = load_mapping(MAPPINGS / "houston_police.yaml")
    first, second = _split_houston(tmp_path)
    zones = ZoneIndex(8)
    # Two runs, the store closed and reopened in between (a hub restart).
    db = tmp_path / "two.sqlite"
    store = SQLiteStore(db)
    import_file(store, "police", first, mapping, zones)
    part = learn_pending(store)
    store.close()
    store = SQLiteStore(db)
    assert load_model(store).watermark == part.watermark  # the state came back from the store
    import_file(store, "police", second, mapping, zones)
    rest = learn_pending(store)
    two_runs = load_model(store)
    store.close()
    # One run over both files.
    store = SQLiteStore(tmp_path / "one.sqlite")
    import_file(store, "police", first, mapping, zones)
    import_file(store, "police", second, mapping, zones)
    whole = learn_pending(store)
    one_run = load_model(store)
    store.close()
    assert part.hours + rest.hours == whole.hours
    assert two_runs.watermark == one_run.watermark
    assert two_runs.to_json() == one_run.to_json()  # bit for bit: nothing refitted, nothing lost
    assert len(one_run.cells) > 1000


def test_api_serves_cube_forecast_and_anomalies(tmp_path: Path) -> None:
    from hub.api.main import create_app
    from hub.config import HubSettings

    model = OnlineModel()
    _background(model, 2, np.random.default_rng(3))
    app = create_app(HubSettings(db=str(tmp_path / "hub.sqlite"), ingest=False, auth=False, k=3))
    with TestClient(app, headers={"X-Purpose": "test of the fusion API"}) as client:
        store = client.app.state.store  # type: ignore[attr-defined]
        store.save_state("fusion.model", model.to_json(), 0.0)
        anomaly = {
            "zone": "h3:883968152bfffff",
            "hour": T0,
            "source": "police",
            "category": "noise",
            "observed": 9.0,
            "expected": 0.4,
            "p": 1e-8,
        }
        store.add_anomalies([anomaly], 0.0)  # fmt: skip
        from hub.storage import CubeRow

        cube = [CubeRow("poly:NOAILLES", T0, "police", "noise", 3.0),
                CubeRow("h3:883968152bfffff", T0, "police", "noise", 9.0)]  # fmt: skip
        store.record_import("police", "x" * 64, "f.csv", {}, cube, 0)
        forecast = client.get("/v1/forecast", params={"horizon": 168}).json()
        assert forecast["horizon_h"] == 168
        # Forecasts learn only the hours the cube serves (hub/fusion/served.py): the one served cell of
        # the cube and its ring, not the hub model's three cells learnt from raw counts.
        assert len(model.cells) == 3 + 3 * 6
        assert forecast["count"] == 1 + 6
        assert {r["zone"] for r in forecast["data"]} >= {"h3:883968152bfffff"}
        top = forecast["data"][0]
        assert top["probability"] == pytest.approx(1 - math.exp(-top["expected"]))
        assert client.get("/v1/anomalies").json()["data"][0]["observed"] == 9.0
        cube = client.get("/v1/cube", params={"zone_kind": "poly", "category": "noise"}).json()
        assert cube["data"] == [{"zone": "poly:NOAILLES", "start": T0, "end": T0 + 3600, "bucket": "hour",
                                 "source": "police",
                                 "category": "noise", "n": 3.0, "suppressed": False,
                                 "start_iso": "2026-01-05T01:00:00+01:00",
                                 "end_iso": "2026-01-05T02:00:00+01:00"}]  # fmt: skip
        assert client.get("/v1/cube", params={"zone_kind": "wrong"}).status_code == 422
