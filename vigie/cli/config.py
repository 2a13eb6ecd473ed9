"""``vigie config validate``: check site files and hardware profiles as the agent would load them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vigie.cli.options import FMT

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``vigie config`` and its actions."""
    cfg = sub.add_parser(
        "config", help="Check configuration files.", description="Check configuration files."
    )
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    validate = cfg_sub.add_parser(
        "validate",
        formatter_class=FMT,
        help="Validate site files and hardware profiles; report every error with file, key and fix.",
        description="Validate each file: a site file is checked camera by camera, merged over its "
        "hardware profile, exactly as the agent would load it.",
        epilog="Example:\n  vigie config validate firmware_configs/*/*.yaml\n",
    )
    validate.add_argument("paths", type=Path, nargs="+", help="YAML files.")
    validate.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="Model folder whose labels the class names are checked against.",
    )
    validate.add_argument(
        "--skip-sources",
        action="store_true",
        help="Do not check that file sources exist (when validating on another machine than the device).",
    )
    validate.set_defaults(handler=_validate)


def _labels(model_dir: Path | None) -> tuple[frozenset[str] | None, str]:
    """The default model's class names, or None and why they could not be read."""
    from edge import model_store
    from vigie.exceptions import ModelError

    try:
        _, labels_path = model_store.locate(model_store.load_manifest(), model_dir)
    except ModelError as exc:
        return None, str(exc)
    return frozenset(model_store.read_labels(labels_path).values()), ""


def _camera_problems(
    path: Path, device: str, labels: frozenset[str] | None, check_sources: bool
) -> list[str]:
    """What the schema cannot see in one camera: class names, source, compute budget."""
    from edge.checks import budget_problems, class_problems, source_problems
    from edge.config import load_agent_config, load_camera

    config = load_agent_config(path, device)
    _, profile = load_camera(path, device)
    found = []
    if labels is not None:
        found += class_problems(device, config.classes, labels, "classes")
        found += class_problems(device, config.thresholds, labels, "thresholds")
    if check_sources:
        found += source_problems(device, config.source, Path.cwd())
    found += budget_problems(
        device, tiles=config.tiles, fps=config.fps_cap or profile.fps_cap, profile=profile.name,
        inference_ms=profile.inference_ms,
    )  # fmt: skip
    return [f"{path}: {line}" for line in found]


def _check(path: Path, labels: frozenset[str] | None, check_sources: bool) -> None:
    """Raise ConfigError (or pydantic's ValidationError) when ``path`` is not a valid file."""
    import yaml

    from edge.config import HardwareProfile, SiteConfig
    from vigie.exceptions import ConfigError

    data = yaml.safe_load(path.read_text()) if path.is_file() else None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a YAML mapping (or not a file)")
    if "cameras" not in data:
        HardwareProfile.model_validate(data)
        return
    problems = []
    for cam in SiteConfig.model_validate(data).cameras:
        try:  # every camera is checked, so one run reports every error
            problems += _camera_problems(path, cam.device, labels, check_sources)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("\ninvalid ".join(problems))


def _validate(args: argparse.Namespace) -> int:
    import yaml
    from pydantic import ValidationError

    from edge.config import format_validation_error
    from vigie.exceptions import ConfigError

    labels, why = _labels(args.model_dir)
    if labels is None:
        print(f"note: class names not checked against the model's labels ({why})")
    failures = 0
    for path in args.paths:
        try:
            _check(path, labels, not args.skip_sources)
            print(f"ok      {path}")
        except ConfigError as exc:
            failures += 1
            print(f"invalid {exc}")
        except yaml.YAMLError as exc:
            failures += 1
            print(f"invalid {path}: not valid YAML: {exc}")
        except ValidationError as exc:  # a located report
            failures += 1
            print(f"invalid {format_validation_error(exc, str(path))}")
    return 1 if failures else 0
