"""The one place for options shared by several commands, and their argument types.

Broker address and MQTT credentials, the hub's store (``--db``) and state folder
(``--state-dir``), zones and lines. Flags that mirror a hub setting default to ``None``:
``None`` means "take it from the hub settings" (environment, else the settings' default),
resolved by :func:`hub_settings` when the command runs. Building the parser must never
import ``hub`` or ``edge``: an edge box installs no hub code, and ``vigie --help`` stays instant.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from hub.config import HubSettings
    from vigie.mqtt import BrokerConfig

__all__ = [
    "DEFAULT_BROKER",
    "DEFAULT_STATE_DIR",
    "FMT",
    "LazyChoices",
    "VigieParser",
    "add_broker",
    "add_broker_options",
    "add_credentials",
    "add_db",
    "add_hub_config",
    "add_state_dir",
    "apply_environment",
    "broker_arg",
    "broker_config",
    "duration_arg",
    "hub_settings",
    "line_arg",
    "state_dir",
    "zone_arg",
]

FMT = argparse.RawDescriptionHelpFormatter
DEFAULT_BROKER = ("127.0.0.1", 1883)
# The CLI's own default (HubSettings has none: no state folder means no enrolment in `hub serve`).
DEFAULT_STATE_DIR = Path("vigie-hub-state")


class VigieParser(argparse.ArgumentParser):
    """An ArgumentParser whose description may end with text computed only when help is shown.

    ``describe`` lets a hub command list what the hub knows (roles, connectors) without
    importing ``hub`` while the parser is built.
    """

    def __init__(self, *args: Any, describe: Callable[[], str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._describe = describe

    def format_help(self) -> str:
        if self._describe is not None:
            self.description = (self.description or "") + self._describe()
            self._describe = None
        return super().format_help()


class LazyChoices:
    """Choices loaded on first use (parsing or help), never while the parser is built.

    When the loader finds nothing (an edge-only install without the hub's modules), any value is
    accepted, as argparse does without choices: the command then fails on the missing module.
    """

    def __init__(self, load: Callable[[], list[str]]) -> None:
        self._load = load
        self._values: list[str] | None = None

    def _get(self) -> list[str]:
        if self._values is None:
            self._values = sorted(self._load())
        return self._values

    def __contains__(self, value: object) -> bool:
        values = self._get()
        return not values or value in values

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    @staticmethod
    def attach(action: argparse.Action, load: Callable[[], list[str]]) -> None:
        """Give ``action`` lazy choices (after ``add_argument``, which would format them at once)."""
        action.choices = LazyChoices(load)


# -- argument types ---------------------------------------------------------------------------
def broker_arg(value: str) -> tuple[str, int]:
    """``HOST:PORT`` → ``(host, port)``."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:1883)")
    return host, int(port)


def duration_arg(text: str) -> str:
    """An argparse type for ``--ttl``: ``30m``, ``24h``, ``7d``, more than zero (kept as text)."""
    from hub.enrolment import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(
            f"duration {text!r}: a token valid for no time is useless; e.g. 8h or 30d"
        )
    return text


def _points(text: str) -> list[tuple[float, ...]]:
    try:
        return [tuple(float(c) for c in p.split(",")) for p in text.split(";") if p]
    except ValueError:
        return []


def zone_arg(value: str) -> dict[str, Any]:
    """``NAME=x,y;x,y;x,y`` → a zone of the agent's configuration."""
    name, _, rest = value.partition("=")
    points = _points(rest)
    if not name or len(points) < 3 or any(len(p) != 2 for p in points):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not NAME=x,y;x,y;x,y (at least 3 points, coordinates in [0, 1])"
        )
    return {"name": name, "polygon": points}


def line_arg(value: str) -> dict[str, Any]:
    """``NAME=ax,ay;bx,by`` → a counting line of the agent's configuration."""
    name, _, rest = value.partition("=")
    points = _points(rest)
    if not name or len(points) != 2 or any(len(p) != 2 for p in points):
        raise argparse.ArgumentTypeError(f"{value!r} is not NAME=ax,ay;bx,by (coordinates in [0, 1])")
    return {"name": name, "a": points[0], "b": points[1]}


# -- broker -----------------------------------------------------------------------------------
def add_broker(parser: argparse.ArgumentParser, what: str, default: tuple[str, int] | None) -> None:
    """``--broker HOST:PORT``; ``default=None`` lets the command choose (e.g. the site file's)."""
    shown = f"{default[0]}:{default[1]}" if default else "127.0.0.1:1883"
    parser.add_argument(
        "--broker", type=broker_arg, default=default, metavar="HOST:PORT", help=f"{what} (default {shown})."
    )


def add_credentials(parser: argparse.ArgumentParser) -> None:
    """``--mqtt-username``, ``--mqtt-password-file`` and ``--mqtt-tls-dir``."""
    parser.add_argument(
        "--mqtt-username",
        default=None,
        help="Broker username (devices: SITE/DEVICE); env VIGIE_MQTT_USERNAME.",
    )
    parser.add_argument(
        "--mqtt-password-file",
        type=Path,
        default=None,
        help="File holding the broker password (never on the command line); env VIGIE_MQTT_PASSWORD.",
    )
    parser.add_argument(
        "--mqtt-tls-dir",
        type=Path,
        default=None,
        help="TLS with the enrolment files in DIR (ca.crt, device.crt, device.key); env VIGIE_MQTT_TLS_DIR.",
    )


def apply_environment(args: argparse.Namespace) -> None:
    """Fill the flags that were not given from the environment's settings, once, after parsing.

    The edge's variables (``VIGIE_MQTT_*``, ``VIGIE_OTA_DIR``) are read through one object,
    :class:`edge.settings.EdgeSettings`; a flag on the command line wins. Done after parsing so
    that building the parser imports no ``edge`` module (``vigie --help`` stays instant).
    """
    names = ("mqtt_username", "mqtt_tls_dir", "mqtt_password_file", "ota_dir", "ota_repo")
    wanted = [n for n in names if hasattr(args, n)]
    if not wanted:
        return
    from edge.settings import EdgeSettings

    env = EdgeSettings.load()
    if hasattr(args, "mqtt_username") and args.mqtt_username is None:
        args.mqtt_username = env.mqtt_username
    if hasattr(args, "mqtt_tls_dir") and args.mqtt_tls_dir is None:
        args.mqtt_tls_dir = env.mqtt_tls_dir
    if hasattr(args, "ota_dir") and args.ota_dir is None:
        args.ota_dir = env.ota_dir
    if hasattr(args, "ota_repo") and args.ota_repo is None:
        args.ota_repo = env.ota_repo
    args.mqtt_password = env.mqtt_password.get_secret_value() if env.mqtt_password else None


def add_broker_options(parser: argparse.ArgumentParser, what: str = "MQTT broker") -> None:
    """``--broker`` (default 127.0.0.1:1883) and the credentials."""
    add_broker(parser, what, DEFAULT_BROKER)
    add_credentials(parser)


def broker_config(args: argparse.Namespace, protocol: Literal["3.1.1", "5"] = "3.1.1") -> BrokerConfig:
    """The broker connection the flags describe (password from its file, else VIGIE_MQTT_PASSWORD)."""
    from vigie.exceptions import ConfigError
    from vigie.mqtt import BrokerConfig

    password = getattr(args, "mqtt_password", None)
    if args.mqtt_password_file is not None:
        try:
            password = args.mqtt_password_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--mqtt-password-file {args.mqtt_password_file}: {exc.strerror}") from None
    host, port = args.broker or DEFAULT_BROKER
    config = BrokerConfig(
        host=host, port=port, username=args.mqtt_username, password=password, protocol=protocol
    )
    tls_dir = getattr(args, "mqtt_tls_dir", None)
    return config.with_tls_dir(tls_dir) if tls_dir is not None else config


# -- the hub's settings -----------------------------------------------------------------------
def add_db(parser: argparse.ArgumentParser) -> None:
    """``--db``; ``None`` means the hub setting (env VIGIE_HUB_DB, else the hub's default file)."""
    parser.add_argument(
        "--db",
        default=None,
        help="The hub's store: SQLite file or postgresql://… URL (env VIGIE_HUB_DB; default: the hub's "
        "SQLite file).",
    )


def add_state_dir(parser: argparse.ArgumentParser, what: str | None = None) -> None:
    """``--state-dir``; ``None`` means env VIGIE_HUB_STATE_DIR, else ./vigie-hub-state."""
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=what
        or "Folder made by `vigie hub init`: device CA, OTA repository, broker files "
        f"(env VIGIE_HUB_STATE_DIR; default ./{DEFAULT_STATE_DIR}).",
    )


# Flags whose value, when given, replaces a hub setting: flag attribute → HubSettings field.
_SETTING_FLAGS = {
    "db": "db",
    "state_dir": "state_dir",
    "zones": "zones",
    "zone_name": "zones_name",
    "resolution": "h3_resolution",
    "controller": "controller",
    "dpo": "dpo_contact",
}


def add_hub_config(parser: argparse.ArgumentParser) -> None:
    """``--config FILE``: the hub's YAML settings file (same as VIGIE_HUB_CONFIG)."""
    parser.add_argument(
        "--config",
        dest="hub_config",
        type=Path,
        default=None,
        metavar="FILE",
        help="Hub settings file (YAML; keys as in docs/configuration.md); env VIGIE_HUB_CONFIG. "
        "Flags win over the environment, which wins over the file.",
    )


def hub_settings(args: argparse.Namespace) -> HubSettings:
    """The hub settings (environment, else defaults) with the flags that were given on top.

    The one call to ``HubSettings.from_env``: where the hub's settings come from is decided there.
    A command with ``--state-dir`` always gets a state folder (./vigie-hub-state by default).
    """
    from hub.config import HubSettings

    update: dict[str, Any] = {
        field: getattr(args, flag)
        for flag, field in _SETTING_FLAGS.items()
        if getattr(args, flag, None) is not None
    }
    if "db" in update:
        update["db"] = str(update["db"])
    # Flags win over the environment and the config file; all are validated together, so a
    # wrong flag value is named like a wrong variable (ConfigError, never a traceback).
    if getattr(args, "hub_config", None) is not None:
        # Through the environment, so that spawned ingest and API workers read the same file.
        os.environ["VIGIE_HUB_CONFIG"] = str(args.hub_config)
    settings = HubSettings.from_env(**update)
    if hasattr(args, "state_dir") and settings.state_dir is None:
        settings = settings.model_copy(update={"state_dir": DEFAULT_STATE_DIR})
    return settings


def state_dir(args: argparse.Namespace) -> Path:
    """The hub's state folder: ``--state-dir``, else the hub setting, else ./vigie-hub-state."""
    return hub_settings(args).state_dir or DEFAULT_STATE_DIR
