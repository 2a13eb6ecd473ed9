"""City data fusion: the six connectors on real or documented-format files, zones, the cube, scrubbing."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import sqlite3
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import h3
import pytest

from hub.fusion.connectors import CONNECTORS
from hub.fusion.importer import import_file
from hub.fusion.observation import ImportReport, Mapping, load_mapping
from hub.fusion.scrub import scrub
from hub.fusion.zones import ZoneIndex, load_geojson
from hub.storage import CubeQuery, SQLiteStore, walk_cube
from tests.conftest import ROOT, SHARED, need

MAPPINGS = ROOT / "hub" / "fusion" / "mappings"
HOUSTON = SHARED / "data" / "incidents" / "houston_crime_2010_ggmap.csv.gz"
MONTGOMERY = SHARED / "data" / "incidents" / "montgomery_pa_911_ems_fire_traffic_sample_3051rows.csv.gz"
QUARTIERS = SHARED / "data" / "geo" / "marseille_quartiers_111.geojson"
CAIRNS = SHARED / "data" / "gtfs" / "cairns_translink_2014_gtfs.zip"
VIEUX_PORT = (43.2951, 5.3745)


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def marseille() -> ZoneIndex:
    return ZoneIndex(8, load_geojson(need(QUARTIERS), "nom_qua"))


def test_zones_map_points_to_cells_and_quartiers(marseille: ZoneIndex) -> None:
    assert len(marseille.polygons) == 111
    keys = marseille.keys(*VIEUX_PORT)
    assert keys[0] == f"h3:{h3.latlng_to_cell(*VIEUX_PORT, 8)}"
    assert keys[1].startswith("poly:")
    assert marseille.polygon(43.2803, 5.3806) != marseille.polygon(43.3500, 5.4300)  # two quartiers
    assert marseille.polygon(48.8566, 2.3522) is None  # Paris is in no quartier


def test_houston_police_file(store: Any) -> None:
    mapping = load_mapping(MAPPINGS / "houston_police.yaml")
    report = import_file(store, "police", need(HOUSTON), mapping, ZoneIndex(8))
    assert report.rows == 86314
    assert report.imported == 86081
    assert report.rejected == 233  # outside the city box, or no coordinates: reported, not imported
    assert report.by_reason["lat,lon: … is outside the city bounds …"] == 228
    assert report.by_reason["lat: … is not a number"] == 5
    assert any(e.row > 0 and "outside the city bounds" in e.reason for e in report.errors)
    rows = list(walk_cube(store, CubeQuery(zone_prefix="h3:", limit=1_000_000)))
    assert sum(r["n"] for r in rows) == 86081
    assert {r["category"] for r in rows} == {"theft", "burglary", "auto_theft", "robbery", "assault",
                                             "sexual_assault", "homicide"}  # fmt: skip
    # The same file again: nothing added (one transaction keyed by the file's SHA-256).
    again = import_file(store, "police", HOUSTON, mapping, ZoneIndex(8))
    assert again.duplicate_file
    assert sum(r["n"] for r in list(walk_cube(store, CubeQuery(zone_prefix="h3:", limit=1_000_000)))) == 86081


def test_fire_brigade_montgomery_911(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "hub.sqlite")
    mapping = load_mapping(MAPPINGS / "montgomery_911.yaml")
    report = import_file(store, "fire", need(MONTGOMERY), mapping, ZoneIndex(8))
    assert report.rows == 3051
    assert report.imported + report.rejected == 3051
    assert report.imported > 2900
    cats = {
        r["category"]: r["n"] for r in list(walk_cube(store, CubeQuery(zone_prefix="h3:", limit=100_000)))
    }
    assert set(cats) == {"ems", "fire", "traffic"}


# -- the police logbook: adversarial personal data ---------------------------------------------------
PII = [
    "Marie Durand", "06 12 34 56 78", "+33 6 98 76 54 32", "marie.durand@gmail.com", "AB-123-CD",
    "1234 XY 13", "12/03/1985", "Jean-Pierre Martin", "07.11.22.33.44", "k.benali@orange.fr",
]  # fmt: skip


def _logbook(path: Path) -> Path:
    header = ["date_heure", "categorie", "initiative", "lat", "lon", "adresse", "resume", "personnes"]
    rows = [
        ["2026-06-12T22:15:00+02:00", "tapage nocturne", "appel", 43.2951, 5.3745, "12 quai du Port",
         "Voisin M. Jean-Pierre Martin tel 07.11.22.33.44", "Marie Durand née le 12/03/1985"],
        ["2026-06-12T23:40:00+02:00", "rixe", "appel", 43.2965, 5.3698, "Cours Belsunce",
         "Véhicule AB-123-CD, plaque 1234 XY 13 ; contact k.benali@orange.fr",
         "Karim Benali, +33 6 98 76 54 32"],
        ["2026-06-13T01:05:00+02:00", "contrôle d'identité", "police", 43.2990, 5.3800, "", "",
         "Marie Durand"],
        # Wrong rows: PII smuggled into the category, a bad date, a point in Paris, no coordinates.
        ["2026-06-13T02:00:00+02:00", "appel de Marie Durand 06 12 34 56 78", "appel", 43.29, 5.37,
         "", "", ""],
        ["13/06/2026 marie.durand@gmail.com", "vol", "appel", 43.29, 5.37, "", "", ""],
        ["2026-06-13T03:00:00+02:00", "vol", "appel", 48.8566, 2.3522, "", "", ""],
        ["2026-06-13T04:00:00+02:00", "vol", "appel", "", "", "chez Marie Durand", "", ""],
    ]  # fmt: skip
    return _write_csv(path, header, rows)


def test_logbook_keeps_no_personal_data(tmp_path: Path, marseille: ZoneIndex) -> None:
    db = tmp_path / "hub.sqlite"
    store = SQLiteStore(db)
    mapping = load_mapping(MAPPINGS / "main_courante.yaml")
    report = import_file(store, "police", _logbook(tmp_path / "mc.csv"), mapping, marseille)
    assert (report.rows, report.imported, report.rejected) == (7, 3, 4)
    fields = {(e.row, e.field) for e in report.errors}
    assert fields == {(4, "categorie"), (5, "date_heure"), (6, "lat,lon"), (7, "lat")}
    # Reports scrub what they echo.
    text = "\n".join(str(e) for e in report.errors)
    assert "unknown category (free text, 36 characters, not shown)" in text
    assert "'[date] [email]' is not a date" in text
    for secret in PII:
        assert secret not in text, secret
    cube = list(walk_cube(store, CubeQuery(limit=1000)))
    assert {r["category"] for r in cube} == {"noise", "fight", "police_check"}
    assert {r["zone"][:5] for r in cube} == {"h3:88", "poly:"}
    store.close()
    # Nothing personal anywhere in the database: every table, every byte.
    raw = (
        db.read_bytes() + (tmp_path / "hub.sqlite-wal").read_bytes()
        if (tmp_path / "hub.sqlite-wal").exists()
        else db.read_bytes()
    )
    dump = "\n".join(sqlite3.connect(db).iterdump())
    for secret in [*PII, "Karim", "Benali", "quai du Port", "Belsunce"]:
        assert secret not in dump, secret
        assert secret.encode() not in raw, secret


@pytest.mark.parametrize(
    ("text", "must_not_contain"),
    [
        ("victime: Marie Durand, née le 12/03/1985", ["Marie", "Durand", "1985"]),
        ("Appeler Mme Lefèvre au 04 91 55 11 22 ou lefevre@laposte.net", ["Lefèvre", "04 91", "laposte"]),
        ("véhicule GH-456-JK stationné devant", ["GH-456-JK"]),
        ("suspect Yanis Haddad, DOB: 2004-07-19", ["Yanis", "Haddad", "2004-07-19"]),
        ("call +44 20 7946 0958 re: plate 4521 BC 13", ["7946", "4521 BC 13"]),
    ],
)
def test_scrub_adversarial(text: str, must_not_contain: list[str]) -> None:
    cleaned = scrub(text)
    for secret in must_not_contain:
        assert secret not in cleaned, (secret, cleaned)


def test_parks_reports_wrong_rows_are_reported(tmp_path: Path, marseille: ZoneIndex) -> None:
    rows = [
        ["2026-05-02T14:00:00+02:00", "dépôt sauvage", 43.2700, 5.3900, "agent 42", "sac de gravats"],
        ["2026-05-02T15:10:00+02:00", "regroupement", 43.2705, 5.3905, "agent 42", ""],
        ["2026-02-30T10:00:00+01:00", "feu", 43.27, 5.39, "agent 7", ""],  # no 30 February
        ["2026-05-02T16:00:00+02:00", "ovni", 43.27, 5.39, "agent 7", ""],  # unknown category
        ["2026-05-02T17:00:00+02:00", "feu", 43.70, 7.26, "agent 7", ""],  # Nice, not Marseille
        ["2026-05-02T18:00:00+02:00", "feu", "quarante-trois", 5.39, "agent 7", ""],
    ]
    path = _write_csv(tmp_path / "parks.csv", ["date", "type", "lat", "lon", "agent", "commentaire"], rows)
    mapping = load_mapping(MAPPINGS / "parks_reports.yaml")
    report = import_file(SQLiteStore(tmp_path / "h.sqlite"), "parks", path, mapping, marseille)  # fmt: skip
    assert report.imported == 2
    errors = {e.row: (e.field, e.reason) for e in report.errors}
    assert errors[3][0] == "date"
    assert "not a date" in errors[3][1]
    assert errors[4] == ("type", "unknown category 'ovni'; add it to the mapping's categories")
    assert errors[5][0] == "lat,lon"
    assert "outside the city bounds" in errors[5][1]
    assert errors[6] == ("lat", "'quarante-trois' is not a number")


def test_operator_presence_k_and_cells(tmp_path: Path, marseille: ZoneIndex) -> None:
    cell = h3.latlng_to_cell(*VIEUX_PORT, 8)
    fine = h3.latlng_to_cell(*VIEUX_PORT, 10)
    rows = [[cell, f"2026-06-12T{h:02d}:00:00+02:00", 150 + 40 * h] for h in range(8, 12)]
    rows += [[cell, "2026-06-12T04:00:00+02:00", 12],  # under k = 20: refused, never stored
             ["not-a-cell", "2026-06-12T12:00:00+02:00", 300],
             [fine, "2026-06-12T12:00:00+02:00", 300]]  # fmt: skip
    store = SQLiteStore(tmp_path / "h.sqlite")
    path = _write_csv(tmp_path / "presence.csv", ["cell", "hour", "devices"], rows)
    report = import_file(
        store, "presence", path, load_mapping(MAPPINGS / "operator_presence.yaml"), marseille
    )
    assert report.imported == 4
    reasons = [e.reason for e in report.errors]
    assert "count under k=20 (not stored)" in reasons
    assert any("not an H3 cell" in r for r in reasons)
    assert any("resolution 10, the hub uses 8" in r for r in reasons)
    cube = list(walk_cube(store, CubeQuery(sources=("presence",), limit=100)))
    assert min(r["n"] for r in cube) >= 20
    assert {r["zone"].split(":")[0] for r in cube} == {"h3", "poly"}  # the cell's quartier too


def test_hospital_admissions_per_day_and_area(tmp_path: Path, marseille: ZoneIndex) -> None:
    areas = sorted(p.name for p in marseille.polygons)[:3]
    rows = [["2026-06-12", areas[0], "traumatologie", 9],
            ["2026-06-12", areas[1], "intoxication éthylique", 6],
            ["2026-06-12", areas[2], "agression", 3],  # under k = 5
            ["2026-06-12", "ATLANTIS", "malaise", 12]]  # fmt: skip
    store = SQLiteStore(tmp_path / "h.sqlite")
    path = _write_csv(tmp_path / "hosp.csv", ["day", "area", "category", "admissions"], rows)
    report = import_file(
        store, "hospital", path, load_mapping(MAPPINGS / "hospital_admissions.yaml"), marseille
    )
    assert report.imported == 2
    assert {e.row for e in report.errors} == {3, 4}
    cube = list(walk_cube(store, CubeQuery(sources=("hospital",), limit=100)))
    assert {(r["zone"], r["category"], r["n"], r["span_h"]) for r in cube} == {
        (f"poly:{areas[0]}", "trauma", 9.0, 24), (f"poly:{areas[1]}", "alcohol", 6.0, 24)}  # fmt: skip


def test_transport_validations_placed_through_gtfs(tmp_path: Path) -> None:
    from hub.fusion.connectors.transport import read_gtfs_stops

    stops = read_gtfs_stops(need(CAIRNS))
    assert len(stops) == 416  # every stop of the Cairns feed
    some = sorted(stops)[:5]
    rows = [[s, f"2014-06-02T{h:02d}:00:00+10:00", 10 + h] for s in some for h in (7, 8, 9)]
    rows.append(["no-such-stop", "2014-06-02T08:00:00+10:00", 40])
    path = _write_csv(tmp_path / "validations.csv", ["stop_id", "hour", "validations"], rows)
    store = SQLiteStore(tmp_path / "h.sqlite")
    report = import_file(store, "transport", path, load_mapping(MAPPINGS / "transport_validations.yaml"),
                         ZoneIndex(8), gtfs=CAIRNS)  # fmt: skip
    assert report.imported == 15
    assert [e.reason for e in report.errors] == [f"stop 'no-such-stop' is not in {CAIRNS.name}"]
    cube = list(walk_cube(store, CubeQuery(sources=("transport",), limit=100)))
    assert sum(r["n"] for r in cube) == sum(r[2] for r in rows[:-1])
    assert all(r["zone"].startswith("h3:") for r in cube)


def test_mapping_errors_name_the_key(tmp_path: Path) -> None:
    from vigie.exceptions import ConfigError

    bad = tmp_path / "m.yaml"
    bad.write_text("connector: police\nsource: Police!\ntime_column: t\ntimezone: Mars/Olympus\nk: 0\n")
    with pytest.raises(ConfigError) as info:
        load_mapping(bad)
    text = str(info.value)
    for key in ("source", "timezone", "k"):
        assert f"{key}:" in text
    assert "unknown time zone 'Mars/Olympus'" in text


def test_gzip_and_report_counts(tmp_path: Path) -> None:
    src = tmp_path / "x.csv.gz"
    with gzip.open(src, "wt", encoding="utf-8") as fh:
        fh.write("date,type,lat,lon\n2026-05-02T14:00:00+02:00,feu,43.27,5.39\nshort,row\n")
    report = ImportReport("parks", "x")
    from hub.fusion.connectors import CONNECTORS

    got = list(CONNECTORS["parks"].read(src, load_mapping(MAPPINGS / "parks_reports.yaml"), report))
    assert len(got) == 1
    assert report.errors[0].field == "<row>"


def test_cameras_fold_into_the_cube_through_their_site_location(tmp_path: Path, marseille: ZoneIndex) -> None:
    from hub.fusion.cameras import fold_cameras, locations_from_sites, save_locations
    from tests.test_wire import event

    site = tmp_path / "vieux-port.yaml"
    site.write_text("site: vieux-port\nlocation: [43.2951, 5.3745]\ncameras:\n  - {device: cam-01}\n"
                    "  - {device: cam-02, location: [43.2965, 5.3698]}\n")  # fmt: skip
    store = SQLiteStore(tmp_path / "h.sqlite")
    store.add_events([event(zone=f"z{i}") for i in range(3)] + [event(device="cam-09")], 1.0)
    save_locations(store, locations_from_sites([site]))
    rows, unplaced = fold_cameras(store, marseille, k=3)
    assert unplaced == {"vieux-port/cam-09"}
    cube = list(walk_cube(store, CubeQuery(sources=("camera",), categories=("person",), limit=100)))
    assert {r["zone"][:3] for r in cube} == {"h3:", "pol"}
    # Three zones of cam-01, each with a peak of 4 people in its one window: 12 in the cell.
    assert [r["n"] for r in cube if r["zone"].startswith("h3:")] == [12.0]
    again, _ = fold_cameras(store, marseille, k=3)  # idempotent: replaced, not added
    assert again == rows
    assert [r["n"] for r in list(walk_cube(store, CubeQuery(sources=("camera",), categories=("person",),
                                                       zone_prefix="h3:", limit=100)))] == [12.0]  # fmt: skip
    # Under k = 5 each window of 4 is floored, so analysts never read those roll-ups' totals: the
    # cube does not carry them either (the hour is set to 0, not left at its earlier 12).
    fold_cameras(store, marseille, k=5)
    assert [r["n"] for r in list(walk_cube(store, CubeQuery(sources=("camera",), categories=("person",),
                                                       zone_prefix="h3:", limit=100)))] == [0.0]  # fmt: skip


def test_houston_times_are_utc_and_land_at_local_hours() -> None:
    """The file's ``time`` is UTC; its ``hour`` column is the local hour: both must agree once imported."""
    mapping = load_mapping(MAPPINGS / "houston_police.yaml")
    report = ImportReport("police", HOUSTON.name)
    chicago = ZoneInfo("America/Chicago")
    with gzip.open(need(HOUSTON), "rt", encoding="utf-8") as fh:
        local_hours = [int(row["hour"]) for _, row in zip(range(3000), csv.DictReader(fh), strict=False)]
    observations = list(CONNECTORS["police"].read(HOUSTON, mapping, report))[:2000]
    # The first rows are New Year's Day at local midnight (06:00 UTC in the file).
    first = dt.datetime.fromtimestamp(observations[0].hour, chicago)
    assert (first.date(), first.hour) == (dt.date(2010, 1, 1), 0)
    by_row = {o.row: dt.datetime.fromtimestamp(o.hour, chicago).hour for o in observations}
    assert all(local_hours[row - 1] == hour for row, hour in by_row.items())
    assert mapping.local_zone == chicago


def test_date_only_incidents_are_spread_over_the_day_with_a_warning(tmp_path: Path) -> None:
    row = ["2026-03-02", "fire", 43.3, 5.4]
    path = _write_csv(tmp_path / "calls.csv", ["date", "type", "lat", "lon"], [row])
    body = {"connector": "fire", "source": "fire", "time_column": "date", "time_format": "%Y-%m-%d",
            "category_column": "type", "categories": {"fire": "fire"},
            "lat_column": "lat", "lon_column": "lon"}  # fmt: skip
    mapping = Mapping.model_validate(body)
    with pytest.raises(ValueError, match="add 'span_h: 24'"):
        list(CONNECTORS["fire"].read(path, mapping, ImportReport("fire", "calls.csv")))
    report = ImportReport("fire", "calls.csv")
    spread = list(CONNECTORS["fire"].read(path, Mapping.model_validate(body | {"span_h": 24}), report))
    assert len(spread) == 24
    assert sum(o.count for o in spread) == pytest.approx(1.0)
    assert len({o.hour for o in spread}) == 24
    assert {o.span_h for o in spread} == {1}
    assert "cannot inform hour-of-day" in report.warnings[0]


def test_day_and_hour_columns_toronto_style(tmp_path: Path) -> None:
    """Toronto's MCI gives the day (its local midnight written in UTC) and the local hour apart."""
    header = ["occurrencedate", "occurrencehour", "MCI", "Lat", "Long"]
    rows = [["2014/03/02 05:00:00+00", "8", "Assault", 43.734, -79.590],
            ["2014/07/02 04:00:00+00", "23", "Robbery", 43.731, -79.600],
            ["2014/07/03 04:00:00+00", "24", "Robbery", 43.731, -79.600]]  # fmt: skip
    path = _write_csv(tmp_path / "mci.csv", header, rows)
    report = ImportReport("police", "mci.csv")
    observations = list(CONNECTORS["police"].read(path, load_mapping(MAPPINGS / "toronto_mci.yaml"), report))
    toronto = ZoneInfo("America/Toronto")
    local = [dt.datetime.fromtimestamp(o.hour, toronto) for o in observations]
    assert local == [dt.datetime(2014, 3, 2, 8, tzinfo=toronto), dt.datetime(2014, 7, 2, 23, tzinfo=toronto)]
    assert report.rejected == 1
    assert "an hour 0-23" in report.errors[0].reason
