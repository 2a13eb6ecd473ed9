"""Per-camera calibration: choose tiling, person threshold and letterbox from frames counted on site.

The technician counts people on a handful of the camera's frames; every
setting the box can afford at the camera's frame rate is evaluated on them
(:mod:`edge.evaluate`) and the one with the smallest error is written to the
camera's entry in the site file. Choosing and editing are pure functions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from edge.checks import budget_problems, detector_passes
from edge.evaluate import Accuracy, Report
from vigie.exceptions import ConfigError

__all__ = ["DEFAULT_THRESHOLD", "THRESHOLDS", "TILES", "Setting", "affordable", "choose", "set_camera_keys"]

#: What calibration tries. Few values on purpose: a handful of frames cannot tell finer steps apart.
TILES = (1, 2, 3)
THRESHOLDS = (0.4, 0.5, 0.6)
#: The model manifest's person threshold: on a tie, the setting nearest it wins (docs/models.md).
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True, slots=True)
class Setting:
    """One candidate configuration of the detector."""

    tiles: int
    threshold: float
    letterbox: bool


def affordable(fps: float, inference_ms: float | None, profile: str) -> list[Setting]:
    """Every candidate whose detector passes fit the profile's budget at ``fps``."""
    return [
        Setting(tiles, threshold, boxed)
        for tiles in TILES
        if not budget_problems("-", tiles=tiles, fps=fps, profile=profile, inference_ms=inference_ms)
        for threshold in THRESHOLDS
        for boxed in (False, True)
    ]


def choose(results: Mapping[Setting, Report]) -> tuple[Setting, Report]:
    """The cheapest setting whose whole-frame MAE is within one person over the set of the best.

    On a handful of frames, a gain smaller than one miscounted person in the
    whole set is noise: it does not pay for more detector passes. Among those,
    the smallest MAE, then bias, then no letterbox, then the threshold nearest
    the model's default wins.

    Raises:
        ConfigError: when nothing was evaluated.
    """
    if not results:
        raise ConfigError("no setting fits the profile's budget: lower fps_cap or correct inference_ms")

    def accuracy(report: Report) -> Accuracy:
        return report.zone_accuracy(report.zones[0])

    best = min(accuracy(r).mae for r in results.values())
    slack = 1.0 / max(accuracy(r).n for r in results.values())
    near = [(s, r) for s, r in results.items() if accuracy(r).mae <= best + slack + 1e-9]

    def key(item: tuple[Setting, Report]) -> tuple[int, float, float, bool, float]:
        setting, report = item
        acc = accuracy(report)
        return (detector_passes(setting.tiles), round(acc.mae, 6), round(abs(acc.bias), 6), setting.letterbox,
                abs(setting.threshold - DEFAULT_THRESHOLD))  # fmt: skip

    return min(near, key=key)


def set_camera_keys(text: str, device: str, keys: Mapping[str, str]) -> str:
    """The site file's text with ``keys`` (YAML values as text) set in the camera ``device``'s block.

    Only a block-style camera entry (``- device: cam-1`` then one key per line)
    is edited, so the file's comments and layout stay as they are; an existing
    key is replaced where it is (with its nested lines, if any), a new one
    added at the end of the entry.

    Raises:
        ConfigError: when the camera is not found as a block-style entry.
    """
    lines = text.splitlines(keepends=True)
    head = re.compile(rf"^\s*-\s+device:\s*['\"]?{re.escape(device)}['\"]?\s*(#.*)?$")
    start = next((i for i, ln in enumerate(lines) if head.match(ln)), None)
    if start is None:
        wanted = ", ".join(f"{k}: {v}" for k, v in keys.items())
        raise ConfigError(
            f"camera {device!r} is not a block-style entry (`- device: {device}` on its own line) in the "
            f"site file: set {wanted} in it by hand"
        )
    indent = len(lines[start]) - len(lines[start].lstrip(" -"))
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) >= indent):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1  # trailing blank lines belong to what follows
    block, pending = lines[start:end], dict(keys)
    out: list[str] = [block[0]]
    i = 1
    while i < len(block):
        line = block[i]
        name = line.strip().split(":", 1)[0]
        if _indent(line) == indent and name in pending:
            comment = line[line.index("#") :] if "#" in line else ""
            out.append(
                f"{' ' * indent}{name}: {pending.pop(name)}{'  ' + comment.rstrip() if comment else ''}\n"
            )
            i += 1
            while i < len(block) and block[i].strip() and _indent(block[i]) > indent:
                i += 1  # the old value's nested lines
            continue
        out.append(line)
        i += 1
    out += [f"{' ' * indent}{name}: {value}\n" for name, value in pending.items()]
    return "".join(lines[:start] + out + lines[end:])


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))
