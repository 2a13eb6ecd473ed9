"""Fuzzing the parsers that take outside input: a clear error every time, never a crash or a hang.

(The wire decoder has its own in tests/test_wire.py.) Each property feeds random or
mutated input and accepts only the documented error type.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.fusion.connectors import CONNECTORS
from hub.fusion.observation import ImportReport, load_mapping
from ota.bundle import BundleError, unpack
from tests.conftest import ROOT
from vigie.exceptions import ConfigError

MAPPINGS = ROOT / "hub" / "fusion" / "mappings"
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_cell = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "2026-06-12T22:15:00+02:00",
            "2026-02-30",
            "43.29",
            "5.37",
            "vol",
            "tapage",
            "",
            "NaN",
            "1e309",
            "-0",
            "../../etc/passwd",
            "Marie Durand 06 12 34 56 78",
        ]
    ),
)


@FUZZ
@given(
    source=st.sampled_from(["police", "parks", "presence", "hospital", "fire", "transport"]),
    rows=st.lists(st.lists(_cell, min_size=0, max_size=10), max_size=12),
    stops=st.lists(st.lists(_cell, min_size=0, max_size=5), max_size=6),
)
def test_connectors_report_bad_rows_and_never_crash(
    tmp_path_factory: object, source: str, rows: list[list[str]], stops: list[list[str]]
) -> None:
    mapping = load_mapping(
        MAPPINGS
        / {
            "police": "main_courante.yaml",
            "parks": "parks_reports.yaml",
            "presence": "operator_presence.yaml",
            "hospital": "hospital_admissions.yaml",
            "fire": "montgomery_911.yaml",
            "transport": "transport_validations.yaml",
        }[source]
    )
    header = {
        "police": ["date_heure", "categorie", "initiative", "lat", "lon", "adresse", "resume", "personnes"],
        "parks": ["date", "type", "lat", "lon", "agent", "commentaire"],
        "presence": ["cell", "hour", "devices"],
        "hospital": ["day", "area", "category", "admissions"],
        "fire": None,  # the Montgomery sample has no header row
        "transport": ["stop_id", "hour", "validations"],
    }[source]
    folder = Path(str(tmp_path_factory.mktemp("fuzz")))  # type: ignore[attr-defined]
    path = folder / "input.csv"
    import csv
    import zipfile

    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        if header:
            w.writerow(header)
        w.writerows(rows)
    report = ImportReport(source, "input.csv")
    if source == "transport":  # a GTFS feed whose stops.txt is as hostile as the rows
        feed = folder / "gtfs.zip"
        text = io.StringIO()
        csv.writer(text).writerows([["stop_id", "stop_lat", "stop_lon"], *stops])
        with zipfile.ZipFile(feed, "w") as z:
            z.writestr("stops.txt", text.getvalue())
        refused = ""
        try:
            observations = list(CONNECTORS[source].read(path, mapping, report, gtfs=feed))  # type: ignore[call-arg]
        except ValueError as exc:  # a feed it cannot use: said once, naming the feed
            refused = str(exc)
        if refused:
            assert "gtfs.zip" in refused
            return
    else:
        observations = list(CONNECTORS[source].read(path, mapping, report))
    assert report.rows == len(rows)
    assert len(observations) + report.rejected == report.rows
    for error in report.errors:
        assert error.row >= 1
        assert error.field
        assert "Marie Durand" not in error.reason


@FUZZ
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=6),
        max_leaves=25,
    )
)
def test_mapping_and_site_files_fail_with_a_config_error(tmp_path_factory: object, data: object) -> None:
    from edge.config import load_agent_config

    folder = Path(str(tmp_path_factory.mktemp("cfg")))  # type: ignore[attr-defined]
    path = folder / "file.yaml"
    path.write_text(yaml.safe_dump(data))
    for load in (lambda: load_mapping(path), lambda: load_agent_config(path, "cam-1")):
        message = ""
        try:
            load()
        except ConfigError as exc:  # the only error allowed; it names the file
            message = str(exc)
        assert not message or str(path) in message or "mapping" in message


_member = st.tuples(
    st.sampled_from(
        [
            "manifest.json",
            "model.tflite",
            "labels.txt",
            "../x",
            "/abs",
            "a/b",
            "ok.bin",
            "",
            ".",
            "ünïcode",
            "x" * 200,
        ]
    ),
    st.binary(max_size=64),
    st.sampled_from([tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE, tarfile.CHRTYPE]),
)


@FUZZ
@given(members=st.lists(_member, max_size=6), manifest=st.booleans())
def test_bundle_unpacking_refuses_everything_odd(
    tmp_path_factory: object, members: list[tuple[str, bytes, bytes]], manifest: bool
) -> None:
    folder = Path(str(tmp_path_factory.mktemp("bundle")))  # type: ignore[attr-defined]
    bundle = folder / "b.tar"
    with tarfile.open(bundle, "w") as tar:
        if manifest:
            body = json.dumps(
                {
                    "model_id": "m",
                    "version": "1.0.0",
                    "model_file": "model.tflite",
                    "labels_file": "labels.txt",
                    "input": {"width": 8, "height": 8},
                    "profiles": ["rpi5"],
                    "files": {},
                }
            ).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        for name, data, kind in members:
            if not name:
                continue
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.linkname = "/etc/shadow"
                tar.addfile(info)
    out = folder / "out"
    with contextlib.suppress(BundleError):
        unpack(bundle, out)
    # Whatever happened, nothing was written outside the output folder.
    written = {p.relative_to(folder).parts[0] for p in folder.rglob("*")}
    assert written <= {"b.tar", "out"}


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_as_a_bundle(tmp_path_factory: object, data: bytes) -> None:
    folder = Path(str(tmp_path_factory.mktemp("raw")))  # type: ignore[attr-defined]
    (folder / "b.tar").write_bytes(data)
    with contextlib.suppress(BundleError):
        unpack(folder / "b.tar", folder / "out")


def test_coverage_guided_fuzzing_of_the_network_parsers(tmp_path: Path) -> None:
    """atheris (libFuzzer) on the wire decoder, the ingest classifier and the MQTT packet parser."""
    pytest.importorskip("atheris", reason="atheris is installed by the dev extra on x86_64")
    seconds = os.environ.get("VIGIE_FUZZ_S", "30")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "fuzz" / "fuzz_parsers.py"), f"-max_total_time={seconds}",
         "-timeout=5", "-rss_limit_mb=2048", f"-artifact_prefix={tmp_path}/", str(corpus)],
        capture_output=True, text=True, timeout=int(seconds) + 120, check=False,
    )  # fmt: skip
    tail = proc.stderr[-4000:]
    assert proc.returncode == 0, f"atheris found a crash or a hang:\n{tail}"
    runs = re.search(r"Done (\d+) runs", proc.stderr)
    assert runs is not None, tail
    assert int(runs.group(1)) > 10_000, tail


_hostile = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True),
    st.text(max_size=30), st.sampled_from(["../../etc/passwd", "rtsp://u:p@h/x", "-1", "1e309", "nope"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)  # fmt: skip


def _leaves(node: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    if isinstance(node, dict):
        return [path] + [p for k, v in node.items() for p in _leaves(v, (*path, k))]
    if isinstance(node, list):
        return [path] + [p for i, v in enumerate(node) for p in _leaves(v, (*path, i))]
    return [path]


@FUZZ
@given(data=st.data(), kind=st.sampled_from(["site", "profile"]))
def test_mutated_real_site_and_profile_files_fail_with_a_config_error(
    tmp_path_factory: object, data: st.DataObject, kind: str
) -> None:
    """Start from the shipped files and break one to three places: deep inside, not just at the top."""
    import copy

    from edge.config import load_agent_config, load_profile

    source = ROOT / "firmware_configs" / ("sites/demo.yaml" if kind == "site" else "profiles/rpi5.yaml")
    doc = copy.deepcopy(yaml.safe_load(source.read_text()))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_leaves(doc)))
        if not path:
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]  # type: ignore[index]
        if data.draw(st.booleans()):
            parent[path[-1]] = data.draw(_hostile)  # type: ignore[index]
        else:
            del parent[path[-1]]  # type: ignore[attr-defined]
    folder = Path(str(tmp_path_factory.mktemp("cfg")))  # type: ignore[attr-defined]
    target = folder / ("site.yaml" if kind == "site" else "rpi5.yaml")
    target.write_text(yaml.safe_dump(doc))
    message = ""
    try:
        if kind == "site":
            device = next(iter(yaml.safe_load(source.read_text())["cameras"]))["device"]
            load_agent_config(target, device)
        else:
            load_profile("rpi5", folder)
    except ConfigError as exc:  # the only error allowed, and it names the file
        message = str(exc)
    assert not message or str(target) in message or "not found" in message, message
