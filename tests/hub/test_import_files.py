"""Issue 20: imports that forgive real files: Latin-1, `;`, truncated, missing, mis-mapped; all or nothing.

Run through the CLI, as a city's analyst would, on files written the way French city
offices' spreadsheets export them (Windows Latin-1, `;` between fields, CRLF).
"""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from hub.storage import CubeQuery, SQLiteStore, walk_cube
from tests.conftest import ROOT, SHARED, cli, need

#: Real quartiers of Marseille, under their written names (the shared GeoJSON spells them in capitals).
NAMES = {"SAINT-JEAN-DU-DESERT": "Saint-Jean-du-Désert", "CHATEAU-GOMBERT": "Château-Gombert",
         "PERIER": "Périer", "SAINT-BARTHELEMY": "Saint-Barthélémy"}  # fmt: skip
HEADER = "day;area;category;admissions"
ROWS = [
    "2026-06-12;Saint-Jean-du-Désert;traumatologie;9",
    "2026-06-12;Château-Gombert;intoxication éthylique;6",
    "2026-06-13;Périer;agression;7",
    "2026-06-13;Saint-Barthélémy;malaise;12",
]


@pytest.fixture(scope="module")
def zones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four quartiers with their accented names, as a city would supply its own GeoJSON."""
    real = json.loads(need(SHARED / "data" / "geo" / "marseille_quartiers_111.geojson").read_text())
    features = [{**f, "properties": {"nom_qua": NAMES[f["properties"]["nom_qua"]]}}
                for f in real["features"] if f["properties"]["nom_qua"] in NAMES]  # fmt: skip
    assert len(features) == 4
    path = tmp_path_factory.mktemp("zones") / "quartiers.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False))
    return path


def _write(path: Path, lines: list[str], *, encoding: str = "latin-1", end: str = "\r\n") -> Path:
    path.write_bytes(("\r\n".join(lines) + end).encode(encoding))
    return path


def _import(tmp_path: Path, zones: Path, file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli("hub", "import", "hospital", str(file), "--mapping", "hospital_admissions", "--zones", str(zones),
            "--db", str(tmp_path / "hub.sqlite"), "--no-learn", *extra),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _cube(tmp_path: Path) -> list[dict[str, object]]:
    store = SQLiteStore(tmp_path / "hub.sqlite")
    try:
        return list(walk_cube(store, CubeQuery(sources=("hospital",), limit=100)))
    finally:
        store.close()


def test_a_latin1_semicolon_file_with_accented_quartiers_imports(tmp_path: Path, zones: Path) -> None:
    file = _write(tmp_path / "urgences.csv", [HEADER, *ROWS])
    done = _import(tmp_path, zones, file)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 rows, 4 imported, 0 rejected" in done.stdout
    assert "not UTF-8 (byte 0xE9 on line 2)" in done.stdout  # the warning says what was detected
    assert "read as cp1252" in done.stdout
    cube = {(r["zone"], r["category"], r["n"]) for r in _cube(tmp_path)}
    assert cube == {("poly:Saint-Jean-du-Désert", "trauma", 9.0), ("poly:Château-Gombert", "alcohol", 6.0),
                    ("poly:Périer", "assault", 7.0), ("poly:Saint-Barthélémy", "illness", 12.0)}  # fmt: skip


def test_the_encoding_can_be_given(tmp_path: Path, zones: Path) -> None:
    file = _write(tmp_path / "urgences.csv", [HEADER, *ROWS])
    done = _import(tmp_path, zones, file, "--encoding", "latin-1", "--delimiter", ";")
    assert done.returncode == 0, done.stderr
    assert "not UTF-8" not in done.stdout
    assert len(_cube(tmp_path)) == 4


def test_a_wrong_encoding_given_is_refused_with_the_fix(tmp_path: Path, zones: Path) -> None:
    file = _write(tmp_path / "urgences.csv", [HEADER, *ROWS])
    done = _import(tmp_path, zones, file, "--encoding", "utf-8")
    assert done.returncode == 2
    assert "byte 0xE9 on line 2 is not utf-8" in done.stderr
    assert "--encoding cp1252" in done.stderr
    assert "Traceback" not in done.stderr
    done = _import(tmp_path, zones, file, "--encoding", "klingon")
    assert "'klingon' is not an encoding" in done.stderr


def test_a_truncated_file_errors_with_the_row_and_imports_nothing(tmp_path: Path, zones: Path) -> None:
    cut = ROWS[3][: ROWS[3].index(";malaise")]  # the copy stopped mid-row
    file = _write(tmp_path / "urgences.csv", [HEADER, *ROWS[:3], cut], end="")
    done = _import(tmp_path, zones, file)
    assert done.returncode == 2, done.stdout
    assert "row 4 (line 5) has 2 of 4 fields" in done.stderr
    assert "truncated" in done.stderr
    assert "nothing imported" in done.stderr
    assert "Traceback" not in done.stderr
    assert _cube(tmp_path) == []  # the three good rows before it were not imported either


def test_a_truncated_gzip_errors_and_imports_nothing(tmp_path: Path, zones: Path) -> None:
    whole = gzip.compress(("\r\n".join([HEADER, *ROWS * 200]) + "\r\n").encode("latin-1"))
    file = tmp_path / "urgences.csv.gz"
    file.write_bytes(whole[: len(whole) // 2])
    done = _import(tmp_path, zones, file)
    assert done.returncode == 2
    assert "looks truncated" in done.stderr
    assert _cube(tmp_path) == []


def test_a_short_row_inside_the_file_is_rejected_not_fatal(tmp_path: Path, zones: Path) -> None:
    file = _write(tmp_path / "urgences.csv", [HEADER, ROWS[0], "2026-06-12;Périer", *ROWS[1:]])
    done = _import(tmp_path, zones, file)
    assert done.returncode == 0, done.stderr
    assert "5 rows, 4 imported, 1 rejected" in done.stdout
    assert "row 2: <row>: 2 fields, expected 4" in done.stdout


def test_a_missing_file_is_one_clear_line(tmp_path: Path, zones: Path) -> None:
    done = _import(tmp_path, zones, tmp_path / "nowhere.csv")
    assert done.returncode == 2
    assert "nowhere.csv: no such file" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_mis_mapped_file_names_the_mapping_key_and_the_header(tmp_path: Path, zones: Path) -> None:
    file = _write(tmp_path / "urgences.csv", ["jour;quartier;category;admissions", *ROWS])
    done = _import(tmp_path, zones, file)
    assert done.returncode == 2
    assert "time_column 'day'" in done.stderr
    assert "zone_column 'area'" in done.stderr
    assert "['jour', 'quartier', 'category', 'admissions']" in done.stderr
    assert "Traceback" not in done.stderr
    assert _cube(tmp_path) == []


def _import_zones(tmp_path: Path, file: Path, zones: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli("hub", "import", "hospital", str(file), "--mapping", "hospital_admissions", "--zones", zones,
            "--db", str(tmp_path / "hub.sqlite"), "--no-learn", *extra),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_bad_zones_file_is_one_clear_line_and_imports_nothing(tmp_path: Path, zones: Path) -> None:
    file = _write(tmp_path / "urgences.csv", [HEADER, *ROWS])
    broken = tmp_path / "cut.geojson"
    broken.write_text(zones.read_text()[:200])
    cases = {
        str(tmp_path / "nowhere.geojson"): "nowhere.geojson: no such file",
        str(broken): "cut.geojson: not a readable GeoJSON file",
        str(file): "not a readable GeoJSON file",  # the CSV passed as --zones by mistake
    }
    for given, said in cases.items():
        done = _import_zones(tmp_path, file, given)
        assert done.returncode == 2, (given, done.stdout, done.stderr)
        assert said in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    done = _import_zones(tmp_path, file, str(zones), "--zone-name", "nom")
    assert done.returncode == 2
    assert "has no property 'nom'; it has ['nom_qua']: pass --zone-name" in done.stderr
    assert "Traceback" not in done.stderr
    assert _cube(tmp_path) == []


def test_a_mapping_of_another_source_names_the_command_to_run(tmp_path: Path, zones: Path) -> None:
    file = _write(tmp_path / "urgences.csv", [HEADER, *ROWS])
    done = subprocess.run(
        cli("hub", "import", "police", str(file), "--mapping", "hospital_admissions",
            "--db", str(tmp_path / "hub.sqlite"), "--no-learn"),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "urgences.csv: the mapping" in done.stderr
    assert "is for source 'hospital', not 'police': run `vigie hub import hospital …`" in done.stderr
    assert _cube(tmp_path) == []


def test_a_utf8_file_given_as_latin1_is_refused_not_half_imported(tmp_path: Path, zones: Path) -> None:
    # latin-1 decodes any byte: without the check, 'Périer' became 'PÃ©rier', an unknown zone, and the
    # ASCII-only rows were imported alone.
    file = _write(tmp_path / "urgences.csv", [HEADER, *ROWS], encoding="utf-8")
    for given in ("latin-1", "cp1252"):
        done = _import(tmp_path, zones, file, "--encoding", given)
        assert done.returncode == 2, done.stdout
        assert "the file is UTF-8 (line 2 has 'é')" in done.stderr, done.stderr
        assert "'Ã©'" in done.stderr
        assert "leave --encoding out" in done.stderr
        assert "Traceback" not in done.stderr
        assert _cube(tmp_path) == []
    done = _import(tmp_path, zones, file, "--encoding", "utf-8")
    assert "4 rows, 4 imported, 0 rejected" in done.stdout, done.stderr


def test_french_dates_are_refused_with_the_fix_then_import(tmp_path: Path, zones: Path) -> None:
    french = [HEADER, *(f"{r[8:10]}/{r[5:7]}/{r[:4]}{r[10:]}" for r in ROWS)]  # 12/06/2026;…
    file = _write(tmp_path / "urgences.csv", french)
    done = _import(tmp_path, zones, file)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "4 rows, 0 imported, 4 rejected" in done.stdout
    assert "set time_format in the mapping to the strptime pattern of the file, e.g. %d/%m/%Y" in done.stdout
    assert "no row imported (nothing stored)" in done.stderr
    assert _cube(tmp_path) == []
    # The analyst fixes the mapping and imports the same file again: it is not "already imported".
    mapping = yaml.safe_load((ROOT / "hub" / "fusion" / "mappings" / "hospital_admissions.yaml").read_text())
    (tmp_path / "urgences.yaml").write_text(yaml.safe_dump({**mapping, "time_format": "%d/%m/%Y"}))
    done = subprocess.run(
        cli("hub", "import", "hospital", str(file), "--mapping", str(tmp_path / "urgences.yaml"), "--zones",
            str(zones), "--db", str(tmp_path / "hub.sqlite"), "--no-learn"),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 rows, 4 imported, 0 rejected" in done.stdout
    assert len(_cube(tmp_path)) == 4


def test_coordinates_with_a_decimal_comma_import(tmp_path: Path) -> None:
    # French spreadsheets write 43,2965 in a `;` file; it was "'43,2965' is not a number" on every row.
    lines = [
        "date_heure;categorie;initiative;lat;lon;adresse;resume;personnes",
        "2026-06-12 22:10;tapage;non;43,2965;5,3698;;;",
        "2026-06-12 23:40;rixe;non;43.2971;5.3702;;;",
    ]
    file = _write(tmp_path / "main_courante.csv", lines)
    done = subprocess.run(
        cli("hub", "import", "police", str(file), "--mapping", "main_courante",
            "--db", str(tmp_path / "hub.sqlite"), "--no-learn"),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 rows, 2 imported, 0 rejected" in done.stdout


def test_a_mapping_that_is_not_valid_yaml_is_one_line_with_where(tmp_path: Path, zones: Path) -> None:
    file = _write(tmp_path / "urgences.csv", [HEADER, *ROWS])
    (tmp_path / "urgences.yaml").write_text("connector: hospital\nsource: hospital\n  time_column: [day\n")
    done = subprocess.run(
        cli("hub", "import", "hospital", str(file), "--mapping", str(tmp_path / "urgences.yaml"),
            "--db", str(tmp_path / "hub.sqlite"), "--no-learn"),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "urgences.yaml: line 3, column 14: mapping values are not allowed here" in done.stderr
    assert "fix the YAML" in done.stderr
    assert "Traceback" not in done.stderr
    assert _cube(tmp_path) == []


def test_importing_the_same_file_again_says_how_its_rejected_rows_can_come_in(
    tmp_path: Path, zones: Path
) -> None:
    file = _write(tmp_path / "urgences.csv", [HEADER, *ROWS, "2026-06-13;Périer;noyade;6"])
    first = _import(tmp_path, zones, file)
    assert "5 rows, 4 imported, 1 rejected" in first.stdout, first.stdout + first.stderr
    again = _import(tmp_path, zones, file)
    assert again.returncode == 0
    assert "already imported (same content); nothing added" in again.stdout
    assert "after fixing the mapping, import a file holding only those rows" in again.stdout
    assert len(_cube(tmp_path)) == 4  # not doubled
