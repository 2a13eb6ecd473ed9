"""``vigie hub assets fetch|check``: the front-end packages of the dashboard and the API pages."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vigie.cli.options import FMT

__all__ = ["register"]


def register(hub_sub: Any) -> None:
    """Add ``vigie hub assets``."""
    assets = hub_sub.add_parser(
        "assets",
        help="Fetch and check the front-end packages the hub serves (Leaflet, uPlot, Swagger UI, ReDoc).",
        description="The dashboard's map and chart libraries and the /docs and /redoc pages are npm "
        "packages pinned in hub/vendor_assets.json with their sha512 integrity. They are fetched once at "
        "install time (scripts/bootstrap does it), never committed, and served by the hub at "
        "/static/vendor/: nothing loads from a CDN at run time.",
    )
    sub = assets.add_subparsers(dest="assets_command", metavar="ACTION", required=True)
    for name, handler, text in (
        (
            "fetch",
            _fetch,
            "Download what is missing, verify its integrity, extract the files the hub serves.",
        ),
        ("check", _check, "List missing files (exit status 1 when any is missing)."),
    ):
        p = sub.add_parser(
            name, formatter_class=FMT, help=text, description=text,
            epilog=f"Example:\n  vigie hub assets {name}\n",
        )  # fmt: skip
        p.add_argument(
            "--dest",
            type=Path,
            default=None,
            help="Folder (default hub/vendor/ in the installed package; env VIGIE_HUB_ASSETS_DIR).",
        )
        p.set_defaults(handler=handler)


def _fetch(args: argparse.Namespace) -> int:
    from hub.vendor_assets import fetch

    dest = fetch(args.dest, say=lambda line: print(line, file=sys.stderr))
    print(f"front-end packages in {dest}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from hub.vendor_assets import FETCH_COMMAND, default_dir, missing

    dest = args.dest or default_dir()
    absent = missing(dest)
    for name in absent:
        print(f"missing: {dest / name}")
    if absent:
        print(f"run `{FETCH_COMMAND}`", file=sys.stderr)
        return 1
    print(f"all front-end packages present in {dest}")
    return 0
