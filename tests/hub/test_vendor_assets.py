"""Front-end packages: pinned, integrity-checked, only listed files extracted; a clear error when absent."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hub.api.main import create_app
from hub.config import HubSettings
from hub.vendor_assets import (
    AssetError,
    VendorPackage,
    check_integrity,
    extract,
    fetch,
    load_manifest,
    missing,
)


def _tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def test_manifest_pins_every_package_with_sha512() -> None:
    packages = load_manifest()
    assert {p.name for p in packages} == {"leaflet", "uplot", "swagger-ui-dist", "redoc"}
    for p in packages:
        assert p.integrity.startswith("sha512-")
        assert len(base64.b64decode(p.integrity[7:])) == 64
        assert p.tarball == f"https://registry.npmjs.org/{p.name}/-/{p.name}-{p.version}.tgz"


def test_a_tarball_that_differs_from_its_pin_is_refused() -> None:
    data = _tarball({"dist/x.js": b"ok"})
    check_integrity(data, _integrity(data), "x@1")
    with pytest.raises(AssetError, match="differs from the pinned"):
        check_integrity(data + b"tampered", _integrity(data), "x@1")
    with pytest.raises(AssetError, match="not sha512"):
        check_integrity(data, "sha1-" + base64.b64encode(hashlib.sha1(data).digest()).decode(), "x@1")  # noqa: S324


def test_only_listed_files_are_extracted_and_a_missing_one_is_named(tmp_path: Path) -> None:
    data = _tarball({"dist/x.js": b"lib", "dist/evil.js": b"not listed", "LICENSE": b"MIT"})
    package = VendorPackage("x", "1.0.0", "https://registry.npmjs.org/x/-/x-1.0.0.tgz", _integrity(data),
                            ("dist/x.js", "LICENSE"))  # fmt: skip
    assert missing(tmp_path, [package]) == ["x/dist/x.js", "x/LICENSE"]
    extract(package, data, tmp_path)
    assert (tmp_path / "x" / "dist" / "x.js").read_bytes() == b"lib"
    assert not (tmp_path / "x" / "dist" / "evil.js").exists()
    assert missing(tmp_path, [package]) == []
    # An upgrade (another version pinned) makes every file missing again, so it is fetched anew.
    newer = VendorPackage("x", "1.0.1", package.tarball, package.integrity, package.files)
    assert missing(tmp_path, [newer]) == ["x/dist/x.js", "x/LICENSE"]
    absent = VendorPackage("x", "1.0.0", package.tarball, package.integrity, ("dist/nope.js",))
    with pytest.raises(AssetError, match=r"no file 'dist/nope\.js' in the tarball"):
        extract(absent, data, tmp_path)


def test_fetch_refuses_a_tampered_download_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="differs from the pinned"):
        fetch(tmp_path, download=lambda url: _tarball({"dist/leaflet.js": b"not leaflet"}))
    assert not any(tmp_path.rglob("*.js"))


def test_hub_says_which_command_to_run_when_assets_are_missing(tmp_path: Path) -> None:
    settings = HubSettings(db=str(tmp_path / "h.sqlite"), ingest=False, assets_dir=tmp_path / "empty")
    with TestClient(create_app(settings)) as client:
        r = client.get("/static/vendor/leaflet/dist/leaflet.js")
        assert r.status_code == 404
        assert "run `vigie hub assets fetch`" in r.json()["detail"]
        page = client.get("/docs")
        assert page.status_code == 503
        assert "vigie hub assets fetch" in page.text
        assert "<script" not in page.text
        assert client.get("/static/vendor/../config.py").status_code == 404
        spec = json.loads(client.get("/openapi.json").text)
        assert "/v1/map/districts" in spec["paths"]
