"""Model bundles: a tar holding ``manifest.json``, the model and its labels, unpacked defensively.

The bundle's integrity and origin are TUF's job (:mod:`ota.repository` signs, the
device's ``ngclient`` verifies); this module makes sure that even a verified
bundle cannot write outside its folder, carry links or devices, or smuggle
files the manifest does not list, and that each file matches its manifest hash.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vigie.exceptions import VigieError

__all__ = ["BundleError", "BundleManifest", "FileEntry", "InputSpec", "pack", "unpack"]

MANIFEST = "manifest.json"
MAX_BUNDLE_BYTES = 256 * 1024 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class BundleError(VigieError):
    """A bundle is malformed or unsafe; the message names the member and the problem."""


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    width: int = Field(ge=8, le=4096)
    height: int = Field(ge=8, le=4096)
    dtype: Literal["uint8", "int8", "float32"] = "uint8"


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0, le=MAX_BUNDLE_BYTES)


class BundleManifest(BaseModel):
    """What a bundle declares; the device checks it before and after unpacking."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$", description="Semantic version; higher is newer.")
    model_file: str
    labels_file: str
    input: InputSpec
    profiles: tuple[str, ...] = Field(min_length=1, description="Hardware profiles it is built for.")
    min_agent_version: str = Field(default="0.1.0", pattern=r"^\d+\.\d+\.\d+$")
    latency_budget_ms: float = Field(default=500.0, gt=0, description="Smoke test: max ms per inference.")
    output: Literal["ssd_postprocess", "yolo"] = Field(
        default="ssd_postprocess", description="Output decoding."
    )
    min_score: float = Field(default=0.4, gt=0, lt=1, description="Default detection threshold.")
    reference_frames: tuple[str, ...] = Field(
        default=(), description="Images among the files on which old and new models are compared (drift)."
    )
    files: dict[str, FileEntry]

    @property
    def ref(self) -> str:
        return f"{self.model_id}@{self.version}"

    @property
    def target_name(self) -> str:
        """The TUF target path of this bundle."""
        return f"models/{self.model_id}-{self.version}.tar"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack(
    model: Path, labels: Path, manifest: dict[str, object], out: Path, *, references: tuple[Path, ...] = ()
) -> BundleManifest:
    """Write a bundle for ``model``, ``labels`` and reference frames; ``manifest`` gives the other fields."""
    members = (model, labels, *references)
    files = {p.name: FileEntry(sha256=_sha256(p.read_bytes()), size=p.stat().st_size) for p in members}
    declared = BundleManifest.model_validate(
        {
            **manifest,
            "model_file": model.name,
            "labels_file": labels.name,
            "files": files,
            "reference_frames": tuple(p.name for p in references),
        }
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w") as tar:
        body = declared.model_dump_json(indent=1).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
        for p in members:
            tar.add(p, arcname=p.name)
    return declared


def unpack(bundle: Path, dest: Path) -> BundleManifest:
    """Check and extract ``bundle`` into ``dest`` (which must be empty or absent).

    Raises:
        BundleError: traversal (``../``, absolute paths), links, devices, members not in the
            manifest, a missing file, a size or hash that differs from the manifest.
    """
    if bundle.stat().st_size > MAX_BUNDLE_BYTES:
        raise BundleError(f"{bundle.name}: {bundle.stat().st_size} bytes, over the {MAX_BUNDLE_BYTES} limit")
    try:
        tar = tarfile.open(bundle, "r:")  # noqa: SIM115 (closed by the `with` below)
    except tarfile.TarError as exc:
        raise BundleError(f"{bundle.name}: not a tar archive ({exc})") from None
    with tar:
        members = tar.getmembers()
        for m in members:
            path = PurePosixPath(m.name)
            if path.is_absolute() or ".." in path.parts or len(path.parts) != 1 or not _NAME.match(m.name):
                raise BundleError(
                    f"{bundle.name}: member {m.name!r} is not a plain file name (path traversal?)"
                )
            if not m.isreg():
                raise BundleError(f"{bundle.name}: member {m.name!r} is not a regular file (link or device)")
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise BundleError(f"{bundle.name}: a member name appears twice")
        if MANIFEST not in names:
            raise BundleError(f"{bundle.name}: no {MANIFEST}")
        try:
            raw = tar.extractfile(MANIFEST).read(1 << 20)  # type: ignore[union-attr]
            manifest = BundleManifest.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as exc:
            raise BundleError(f"{bundle.name}: {MANIFEST} is invalid: {exc}") from None
        listed = set(manifest.files) | {MANIFEST}
        if set(names) != listed:
            raise BundleError(
                f"{bundle.name}: members {sorted(set(names) ^ listed)} differ from the manifest"
            )
        if {manifest.model_file, manifest.labels_file, *manifest.reference_frames} - set(manifest.files):
            raise BundleError(
                f"{bundle.name}: model_file, labels_file or a reference frame is not among the files"
            )
        dest.mkdir(parents=True, exist_ok=True)
        if any(dest.iterdir()):
            raise BundleError(f"{dest} is not empty: refusing to mix two bundles")
        for m in members:
            if m.name == MANIFEST:
                continue
            entry = manifest.files[m.name]
            if m.size != entry.size:
                raise BundleError(
                    f"{bundle.name}: {m.name} is {m.size} bytes, the manifest says {entry.size}"
                )
            data = tar.extractfile(m).read()  # type: ignore[union-attr]
            if _sha256(data) != entry.sha256:
                raise BundleError(f"{bundle.name}: {m.name} does not match its sha256 in the manifest")
            (dest / m.name).write_bytes(data)
        (dest / MANIFEST).write_bytes(raw)
    return manifest
