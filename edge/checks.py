"""Checks that a schema cannot make: class names against the model's labels, sources, compute budget.

Each function returns the problems it found as lines naming the camera, the
value and the fix (empty: nothing wrong). They are pure but for
:func:`source_problems`, which looks at the file system; ``vigie config
validate`` runs them all after the schema, so one run reports every problem once.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["HEADROOM", "budget_problems", "class_problems", "detector_passes", "source_problems"]

#: Share of a second the detector may use: decoding, tracking and publishing need the rest.
HEADROOM = 0.8
# Words technicians write for COCO classes; difflib would not find these.
_SYNONYMS = {
    "pedestrian": "person", "people": "person", "human": "person", "bike": "bicycle", "cycle": "bicycle",
    "motorbike": "motorcycle", "scooter": "motorcycle", "lorry": "truck", "van": "truck", "coach": "bus",
    "bag": "handbag", "luggage": "suitcase", "automobile": "car",
}  # fmt: skip
_LIVE = ("rtsp://", "rtsps://", "http://", "https://")


def class_problems(camera: str, names: Collection[str], labels: Collection[str], where: str) -> list[str]:
    """Class names (``classes``, ``thresholds`` keys) the model cannot report: they would never count."""
    known = set(labels)
    problems = []
    for name in names:
        if name in known:
            continue
        close = _SYNONYMS.get(name) if _SYNONYMS.get(name) in known else None
        close = close or next(iter(difflib.get_close_matches(name, sorted(known), n=1)), None)
        hint = f"did you mean {close!r}? " if close else ""
        effect = "never be counted" if where == "classes" else "never apply"
        problems.append(
            f"cameras[{camera}].{where}: {name!r} is not a class of the model, so it would {effect}: "
            f"{hint}use the model's label names (`vigie model check` shows the labels file)"
        )
    return problems


def source_problems(camera: str, source: str, base: Path) -> list[str]:
    """A file source that does not exist, or a camera URL that is not well formed.

    A relative path is read from ``base`` (the agent's working folder).
    """
    where = f"cameras[{camera}].source"
    if source.startswith(_LIVE):
        parts = urlsplit(source)
        # Credentials come from the environment (`${VIGIE_RTSP_USER}`): only the host must be there.
        if not parts.hostname:
            return [f"{where}: {source!r} has no host: write it as {parts.scheme}://host[:port]/path"]
        try:
            parts.port  # noqa: B018 — parsing the port is the check
        except ValueError:
            return [f"{where}: {source!r} has a port that is not a number between 0 and 65535"]
        return []
    if "://" in source:
        scheme = source.split("://", 1)[0]
        return [f"{where}: {source!r}: scheme {scheme!r} is not supported; use rtsp://, rtsps://, http(s)://"]
    if source.startswith("picamera2") or re.fullmatch(r"/dev/video\d+", source):
        return []  # a camera device: present only on the box itself, checked when the agent opens it
    path = Path(source) if Path(source).is_absolute() else base / source
    if path.exists():
        return []
    names = path.parts
    # Footage shipped in a Debian package's doc folder comes back with the package.
    in_doc = names[1:4] == ("usr", "share", "doc") and len(names) > 4
    package = f"install the Debian package {names[4]}, " if in_doc else ""
    return [
        f"{where}: {source!r} does not exist: {package}fix the path, copy the footage there, or use a "
        "camera (rtsp://…, /dev/videoN, picamera2)"
    ]


def detector_passes(tiles: int) -> int:
    """Detector runs per frame: n×n tiles plus the whole frame, or one pass without tiling."""
    return tiles * tiles + 1 if tiles > 1 else 1


def budget_problems(
    camera: str, *, tiles: int, fps: float, profile: str, inference_ms: float | None
) -> list[str]:
    """Tiling × frame rate against what the profile's box can compute in a second."""
    if inference_ms is None:
        return []
    passes = detector_passes(tiles)
    load = fps * passes * inference_ms / 1000.0
    if load <= HEADROOM:
        return []
    max_fps = HEADROOM * 1000.0 / (passes * inference_ms)
    return [
        f"cameras[{camera}]: {tiles}x{tiles} tiles at {fps:g} fps need {passes} detector passes a frame × "
        f"{inference_ms:g} ms on {profile} = {load:.1f} s of compute per second (budget {HEADROOM:g} s): "
        f"lower fps_cap to {max_fps:.1f} or fewer, or use fewer tiles"
    ]
