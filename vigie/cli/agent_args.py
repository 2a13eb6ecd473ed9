"""From ``vigie edge run|snapshot`` flags to the agent's configuration, with or without a site file.

The rule with ``--config SITE.yaml`` (also in ``docs/configuration.md`` and ``edge run --help``):
a flag that only changes *how this process runs* (footage, pace, threads, tiles, folders,
broker) is an override applied on top of the file's camera; a flag that changes *what is
counted or published* (zones, lines, window, k, epsilon) is refused, because the site file
is the reviewed record of those; ``--site`` is accepted only when it names the file's own site.
No flag is silently ignored.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vigie.cli.options import broker_config
from vigie.exceptions import ConfigError

if TYPE_CHECKING:
    from edge.config import AgentConfig

__all__ = ["OVERRIDES", "REFUSED", "agent_config", "config_overrides"]

# flag → AgentConfig field: applied over the site file's camera when given.
OVERRIDES = {
    "source": "source",
    "loop": "loop",
    "realtime": "realtime",
    "fps_cap": "fps_cap",
    "threads": "threads",
    "tiles": "tiles",
    "model_dir": "model_dir",
    "ota_dir": "ota_dir",
    "ota_repo": "ota_repo",
    "outbox": "outbox",
    "snapshot_dir": "snapshot_dir",
    "drain_timeout": "drain_timeout_s",
    "resend_after": "resend_after_s",
}
# flag → why it cannot be combined with --config.
REFUSED = {
    "zone": "zones come from the site file",
    "line": "lines come from the site file",
    "window": "the anonymisation window comes from the site file",
    "k": "k comes from the site file",
    "epsilon": "epsilon comes from the site file",
}


def _given(args: argparse.Namespace, name: str) -> Any:
    value = getattr(args, name, None)  # `edge snapshot` has fewer flags than `edge run`
    return None if value is False else value  # store_true flags: False means "not given"


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that apply on top of a site file; refuses those the file alone decides.

    Raises:
        ConfigError: naming the flag and the fix.
    """
    for flag, why in REFUSED.items():
        if _given(args, flag) is not None:
            option = "--" + flag.replace("_", "-")
            raise ConfigError(f"{option} cannot be used with --config: {why}; edit it or drop --config")
    overrides = {field: _given(args, flag) for flag, field in OVERRIDES.items()}
    overrides["broker"] = (
        broker_config(args) if _given(args, "broker") or _given(args, "mqtt_username") else None
    )
    if overrides["broker"] is None:
        overrides["tls_dir"] = _given(args, "mqtt_tls_dir")  # TLS on the site file's broker
    return overrides


def _from_flags(args: argparse.Namespace) -> AgentConfig:
    from pydantic import ValidationError

    from edge.config import AgentConfig, format_validation_error

    if not args.site or not args.source:
        raise ConfigError(
            "give --config SITE.yaml, or both --site and --source (see `vigie edge run --help`)"
        )
    raw: dict[str, Any] = {field: _given(args, flag) for flag, field in OVERRIDES.items()}
    raw.update(site=args.site, device=args.device, zones=args.zone, lines=args.line)
    if args.broker or args.mqtt_username:
        raw["broker"] = broker_config(args)
    anonymisation = {"window_s": args.window, "k": args.k, "epsilon": args.epsilon}
    raw["anonymisation"] = {k: v for k, v in anonymisation.items() if v is not None}
    try:
        return AgentConfig.model_validate({k: v for k, v in raw.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "command-line settings")) from None


def agent_config(args: argparse.Namespace) -> tuple[AgentConfig, Callable[[], AgentConfig] | None]:
    """The AgentConfig from a site file (plus overrides) or from flags, and a reloader for SIGHUP."""
    from edge.config import load_agent_config

    if args.config is None:
        return _from_flags(args), None
    overrides = config_overrides(args)

    def load() -> AgentConfig:
        return load_agent_config(args.config, args.device, **overrides)

    config = load()
    if getattr(args, "site", None) and args.site != config.site:
        raise ConfigError(
            f"--site {args.site!r} disagrees with {args.config}, whose site is {config.site!r}: "
            "the site comes from the site file; drop --site or edit the file"
        )
    return config, load
