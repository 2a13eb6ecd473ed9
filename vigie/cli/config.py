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
    validate.set_defaults(handler=_validate)


def _check(path: Path) -> None:
    """Raise ConfigError (or pydantic's ValidationError) when ``path`` is not a valid file."""
    import yaml

    from edge.config import HardwareProfile, SiteConfig, load_agent_config
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
            load_agent_config(path, cam.device)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("\ninvalid ".join(problems))


def _validate(args: argparse.Namespace) -> int:
    import yaml
    from pydantic import ValidationError

    from edge.config import format_validation_error
    from vigie.exceptions import ConfigError

    failures = 0
    for path in args.paths:
        try:
            _check(path)
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
