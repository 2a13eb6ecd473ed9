"""``vigie ota …``: signed model bundles and the TUF repository (hub side).

Campaigns are in :mod:`vigie.cli.ota_campaign`; the device side (``vigie edge update``,
``ota-listen``) in :mod:`vigie.cli.edge_device`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vigie.cli import ota_campaign
from vigie.cli.options import DEFAULT_STATE_DIR, FMT, state_dir

__all__ = ["register"]


def _repo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repo",
        type=Path,
        default=None,
        help="The TUF repository folder (default STATE_DIR/ota, where `vigie hub init` made it; "
        f"STATE_DIR is env VIGIE_HUB_STATE_DIR, else ./{DEFAULT_STATE_DIR}).",
    )


def _keys(parser: argparse.ArgumentParser, roles: str) -> None:
    parser.add_argument(
        "--keys",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"Folder of the offline TUF keys ({roles}), the mounted medium (env VIGIE_OTA_OFFLINE_KEYS; "
        "docs/security.md, the signing ceremony). Keys still in REPO/keys are used first.",
    )


def _repo_path(args: argparse.Namespace) -> Path:
    return Path(args.repo) if args.repo is not None else state_dir(args) / "ota"


def register(sub: Any) -> None:
    """Add ``vigie ota`` and its actions, campaigns included."""
    ota = sub.add_parser(
        "ota",
        formatter_class=FMT,
        help="Signed model updates: bundles, TUF repository.",
        description="Model bundles are signed through The Update Framework (python-tuf): root, targets, "
        "snapshot and timestamp roles with their own keys in REPO/keys. Devices verify with the root they "
        "received at enrolment, so they refuse tampered files, unknown keys, replayed old metadata "
        "(rollback) and stale metadata (freeze). The hub serves REPO at /ota/.",
        epilog="Example:\n  vigie ota bundle --model m.tflite --labels labels.txt --id ssd-coco "
        "--version 1.1.0 "
        "--width 300 --height 300 --profile rpi5 --out ssd-1.1.0.tar\n  vigie ota publish ssd-1.1.0.tar\n",
    )
    ota_sub = ota.add_subparsers(dest="ota_command", metavar="ACTION", required=True)
    init = ota_sub.add_parser("init", help="Create keys and metadata (also done by `vigie hub init`).")
    _repo(init)
    init.set_defaults(handler=_init)
    bundle = ota_sub.add_parser("bundle", help="Pack a model, its labels and a manifest into a bundle.")
    bundle.add_argument("--model", type=Path, required=True)
    bundle.add_argument("--labels", type=Path, required=True)
    bundle.add_argument("--id", required=True, help="Model id, e.g. ssd-mobilenet-v2-coco-quant.")
    bundle.add_argument("--version", required=True, help="Semantic version, higher than the fleet's.")
    bundle.add_argument("--width", type=int, required=True)
    bundle.add_argument("--height", type=int, required=True)
    bundle.add_argument("--dtype", default="uint8", choices=["uint8", "int8", "float32"])
    bundle.add_argument("--profile", action="append", required=True, help="Target hardware profile; repeat.")
    bundle.add_argument(
        "--latency-budget-ms", type=float, default=500.0, help="Smoke-test limit (default 500)."
    )
    bundle.add_argument("--min-score", type=float, default=0.4, help="Detection threshold (default 0.4).")
    bundle.add_argument(
        "--reference",
        type=Path,
        action="append",
        default=[],
        help="A reference image to compare the old and new models on (drift gate); repeat.",
    )
    bundle.add_argument("--out", type=Path, required=True)
    bundle.set_defaults(handler=_bundle)
    publish = ota_sub.add_parser("publish", help="Sign a bundle into the repository.")
    publish.add_argument("bundle", type=Path)
    _repo(publish)
    _keys(publish, "the targets key")
    publish.set_defaults(handler=_publish)
    listing = ota_sub.add_parser("list", help="Published targets.")
    _repo(listing)
    listing.set_defaults(handler=_list)
    revoke = ota_sub.add_parser("revoke", help="Withdraw a published target.")
    revoke.add_argument("target", help="e.g. models/ssd-coco-1.1.0.tar")
    _repo(revoke)
    _keys(revoke, "the targets key")
    revoke.set_defaults(handler=_revoke)
    refresh = ota_sub.add_parser(
        "refresh", help="Re-sign snapshot and timestamp (run daily: expiry is 1 day)."
    )
    _repo(refresh)
    refresh.set_defaults(handler=_refresh)
    rotate = ota_sub.add_parser(
        "rotate-key",
        help="Replace a role's key (root, targets, snapshot, timestamp); devices follow by themselves.",
    )
    rotate.add_argument("role", choices=["root", "targets", "snapshot", "timestamp"])
    _repo(rotate)
    _keys(rotate, "root, and the key replaced when it is kept there: its successor is written there")
    rotate.set_defaults(handler=_rotate)
    ota_campaign.register(ota_sub)


def _init(args: argparse.Namespace) -> int:
    from ota.repository import init_repository

    print(f"root metadata: {init_repository(_repo_path(args))}")
    return 0


def _bundle(args: argparse.Namespace) -> int:
    from ota.bundle import pack

    manifest = pack(
        args.model,
        args.labels,
        {
            "model_id": args.id,
            "version": args.version,
            "profiles": args.profile,
            "input": {"width": args.width, "height": args.height, "dtype": args.dtype},
            "latency_budget_ms": args.latency_budget_ms,
            "min_score": args.min_score,
        },
        args.out,
        references=tuple(args.reference),
    )
    print(f"{args.out}: {manifest.ref}, target name {manifest.target_name}")
    return 0


def _publish(args: argparse.Namespace) -> int:
    import tarfile

    from ota.bundle import BundleManifest
    from ota.repository import publish

    with tarfile.open(args.bundle) as tar:
        member = tar.extractfile("manifest.json")
        if member is None:
            print(f"vigie: error: {args.bundle} has no manifest.json", file=sys.stderr)
            return 2
        manifest = BundleManifest.model_validate_json(member.read())
    info = publish(_repo_path(args), args.bundle, manifest.target_name, keys=args.keys)
    print(f"published {manifest.target_name} ({info.length} bytes, sha256 {info.hashes['sha256'][:12]}…)")
    return 0


def _list(args: argparse.Namespace) -> int:
    from ota.repository import list_targets

    print(json.dumps(list_targets(_repo_path(args)), indent=2))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from ota.repository import revoke

    if not revoke(_repo_path(args), args.target, keys=args.keys):
        print(f"vigie: error: {args.target} is not published (`vigie ota list`)", file=sys.stderr)
        return 2
    print(f"revoked {args.target}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from ota.repository import rotate_key

    version = rotate_key(_repo_path(args), args.role, keys=args.keys)
    print(f"{args.role} key replaced; root version {version} names the new key (the old one is retired)")
    return 0


def _refresh(args: argparse.Namespace) -> int:
    from ota.repository import refresh_timestamp

    print(f"timestamp version {refresh_timestamp(_repo_path(args))}")
    return 0
