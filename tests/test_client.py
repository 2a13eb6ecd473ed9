"""Issue 20: the analysts' Python client and its worked example, against a real hub under uvicorn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from hub.auth import hash_password
from hub.storage import CubeRow, SQLiteStore
from tests.browser import RunningHub, fresh_hub
from tests.conftest import ROOT
from vigie.client import ClientError, HubClient, to_dataframe

PASSWORD = "client test password"
EXAMPLE = ROOT / "docs" / "examples" / "analyst_month.py"
PARIS = ZoneInfo("Europe/Paris")
DISTRICT = "NOAILLES"
JANUARY = (datetime(2026, 1, 1, tzinfo=PARIS), datetime(2026, 2, 1, tzinfo=PARIS))
#: Thefts every day of January at 18:00 (6-8 a day), except two small days (under k = 5); assaults on
#: a few days; and a February the month's answer must leave out.
THEFT = {day: (2 if day in (10, 11) else 6 + day % 3) for day in range(1, 32)}
ASSAULT = {3: 7, 4: 9, 20: 6}


def _at(year: int, month: int, day: int) -> int:
    """18:00 that day in Paris, as the cube's hour."""
    return int(datetime(year, month, day, 18, tzinfo=PARIS).timestamp())


def _plant(db: Path) -> None:
    store = SQLiteStore(db)
    rows = [
        CubeRow(
            f"poly:{DISTRICT}", int(datetime(2026, 1, d, 18, tzinfo=PARIS).timestamp()), "police", c, float(n)
        )
        for c, days in (("theft", THEFT), ("assault", ASSAULT))
        for d, n in days.items()
    ]
    rows.append(CubeRow(f"poly:{DISTRICT}", _at(2026, 2, 3), "police", "theft", 40.0))
    store.record_import("police", "cd" * 32, "planted.csv", {}, rows, 0)
    store.add_user("ana", hash_password(PASSWORD), "analyst", time.time())
    store.close()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    folder = tmp_path_factory.mktemp("client")
    # The hub knows its named areas (VIGIE_HUB_ZONES), as a city's would: a square around Noailles.
    square = [[5.37, 43.29], [5.39, 43.29], [5.39, 43.30], [5.37, 43.30], [5.37, 43.29]]
    feature = {"type": "Feature", "properties": {"nom_qua": DISTRICT},
               "geometry": {"type": "Polygon", "coordinates": [square]}}  # fmt: skip
    zones = folder / "quartiers.geojson"
    zones.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VIGIE_HUB_ZONES", str(zones))
        with fresh_hub(folder, _plant) as running:
            yield running


@pytest.fixture(scope="module")
def analyst(hub: RunningHub) -> HubClient:
    return HubClient.login(hub.url, "ana", PASSWORD, purpose="client tests: January in Noailles")


def test_login_and_pages_give_the_whole_answer(analyst: HubClient) -> None:
    query = {"bucket": "day", "zone": f"poly:{DISTRICT}", "since": JANUARY[0], "until": JANUARY[1]}
    whole = analyst.cube(**query)
    paged = analyst.cube(**query, page_size=4)  # 9 pages, through the `next` links
    assert paged == whole
    assert analyst.last["tz"] == "Europe/Paris"
    assert {r["start_iso"][:10] for r in whole} == {f"2026-01-{d:02d}" for d in THEFT}  # nothing of February
    served = {(r["start_iso"][:10], r["category"]): r["n"] for r in whole if not r["suppressed"]}
    assert served[("2026-01-05", "theft")] == THEFT[5]
    assert all(r["n"] is None for r in whole if r["suppressed"])
    assert {r["start_iso"][:10] for r in whole if r["suppressed"]} >= {"2026-01-10", "2026-01-11"}


def test_the_month_bucket_through_the_client(analyst: HubClient) -> None:
    january, february = analyst.cube(bucket="month", category="theft", since="2026-01-05")
    # January's whole ISO weeks: Monday 29 December to Monday 2 February (local); 1 February is in it.
    assert january["start_iso"] == "2025-12-29T00:00:00+01:00"
    assert january["n"] == sum(THEFT.values())
    assert (february["start_iso"], february["n"]) == ("2026-02-02T00:00:00+01:00", 40)


def test_dataframe_helper(analyst: HubClient) -> None:
    frame = analyst.cube_frame(bucket="day", zone=f"poly:{DISTRICT}", since=JANUARY[0], until=JANUARY[1])
    assert str(frame["start"].dt.tz) == "Europe/Paris"
    assert frame["start"].min() == JANUARY[0]
    assert frame["n"].isna().sum() == frame["suppressed"].sum() >= 2  # suppressed: NaN, a gap
    assert frame["n"].sum() == sum(r["n"] for r in analyst.cube(bucket="day", since=JANUARY[0],
                                                                  until=JANUARY[1]) if r["n"])  # fmt: skip


def test_dataframes_without_pandas_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'vigie\[client\]'"):
        to_dataframe([{"n": 1}])


def test_errors_are_the_hubs_own_words(hub: RunningHub, analyst: HubClient) -> None:
    with pytest.raises(ClientError) as wrong:
        HubClient.login(hub.url, "ana", "not the password", purpose="client tests")
    assert wrong.value.status == 401
    with pytest.raises(ClientError, match=r"query\.since: .*ISO 8601") as bad:
        analyst.cube(since="last tuesday")
    assert bad.value.status == 422
    with pytest.raises(ClientError, match="is the hub running"):
        HubClient("http://127.0.0.1:9", "vgk_x", purpose="client tests").get("/healthz")
    with pytest.raises(ValueError, match="http"):
        HubClient("file:///etc/passwd", "vgk_x", purpose="client tests")


def test_a_short_purpose_is_refused_before_logging_in() -> None:
    # Port 9 has no hub: a ValueError about the purpose (not "is the hub running") shows that no
    # login was attempted, so no token was made for a session that could not query.
    with pytest.raises(ValueError, match="purpose 'x': say why you query the hub in 3-200 characters"):
        HubClient.login("http://127.0.0.1:9", "ana", PASSWORD, purpose="x")


def test_parquet_export_through_the_client(analyst: HubClient) -> None:
    import io

    import pyarrow.parquet as pq

    table = pq.read_table(
        io.BytesIO(analyst.export("parquet", bucket="day", since=JANUARY[0], until=JANUARY[1]))
    )
    assert table.num_rows == len(analyst.cube(bucket="day", since=JANUARY[0], until=JANUARY[1]))


def test_the_worked_example_plots_a_month(hub: RunningHub, tmp_path: Path, analyst: HubClient) -> None:
    out = tmp_path / "noailles.png"
    env = {**os.environ, "VIGIE_PASSWORD": PASSWORD, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--hub", hub.url, "--user", "ana", "--district", DISTRICT,
         "--month", "2026-01", "--out", str(out)],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rows = analyst.cube(bucket="day", zone=f"poly:{DISTRICT}", since=JANUARY[0], until=JANUARY[1])
    served = [r for r in rows if r["n"] is not None]
    expected = (
        f"{DISTRICT} 2026-01: {len(served)} day-category counts served "
        f"(total {sum(r['n'] for r in served):g}), {len(rows) - len(served)} suppressed"
    )
    assert expected in done.stdout
    import matplotlib.image

    pixels = matplotlib.image.imread(out)
    assert pixels.shape[:2] == (400, 1000)
    assert pixels.std() > 0.05  # a chart was drawn, not a blank page
    # The two suppressed theft days (10 and 11 January) are shaded, not a bare gap that reads as 0.
    shaded = (abs(pixels[..., :3] - 0.85) < 0.02).all(axis=-1)
    assert shaded.sum() > 2000, shaded.sum()


def test_the_worked_example_names_the_district_it_does_not_know(hub: RunningHub, tmp_path: Path) -> None:
    out = tmp_path / "noailles.png"
    env = {**os.environ, "VIGIE_PASSWORD": PASSWORD, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--hub", hub.url, "--user", "ana", "--district", "Noailles",
         "--month", "2026-01", "--out", str(out)],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "--district 'Noailles' is not a named area on this hub" in done.stderr
    assert "did you mean 'NOAILLES'?" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()  # no empty chart to mistake for a quiet month
