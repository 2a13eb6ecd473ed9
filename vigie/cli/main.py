"""The ``vigie`` command: the top parser, built from each group's ``register``, and one dispatch.

Every leaf parser sets ``handler`` (``set_defaults``); :func:`main` calls ``args.handler(args)``.
Heavy imports (OpenCV, LiteRT, FastAPI) happen inside the handlers, so that ``vigie --help`` is
instant and an edge box without the hub's dependencies can still run ``vigie edge run``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from vigie import __version__
from vigie.cli import config, demo, edge, hub, model, ota, sim
from vigie.cli.options import FMT, VigieParser, apply_environment
from vigie.exceptions import VigieError

__all__ = ["build_parser", "main"]

# The order of `vigie --help`'s command list.
_GROUPS = (edge, config, hub, ota, model, sim, demo)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; imports neither ``hub`` nor ``edge``."""
    parser = VigieParser(
        prog="vigie",
        formatter_class=FMT,
        description="Vigie: a public-tranquillity observatory. Edge agents count objects per zone "
        "on the device and send only anonymised counts; the hub stores and serves them.",
        epilog="Start here:\n  vigie demo                 broker + hub + two agents on street footage\n"
        "  vigie edge run --help      run one agent\n"
        "  vigie hub serve --help     run the hub (dashboard at /dashboard/)\n"
        "  vigie ota --help           signed model updates and rollout campaigns\n",
    )
    parser.add_argument("--version", action="version", version=f"vigie {__version__}")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("VIGIE_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="Log verbosity (default INFO).",
    )
    parser.add_argument(
        "--log-format",
        default=os.environ.get("VIGIE_LOG_FORMAT", "text"),
        choices=["text", "json"],
        help="Human text or JSON lines (default text).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in _GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args = build_parser().parse_args(argv)
    from vigie.logs import configure

    configure(args.log_level, args.log_format)
    try:
        apply_environment(args)
        return int(args.handler(args))
    except VigieError as exc:
        print(f"vigie: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
