"""CLI for signed model updates: `vigie ota …` on the hub, `vigie edge update` on the device."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_ota_commands", "add_update_command"]

_FMT = argparse.RawDescriptionHelpFormatter


def _repo(parser: argparse.ArgumentParser) -> None:
    default = Path(os.environ.get("VIGIE_HUB_STATE_DIR", "vigie-hub-state")) / "ota"
    parser.add_argument(
        "--repo",
        type=Path,
        default=default,
        help=f"The TUF repository folder (default {default}: `vigie hub init` made it).",
    )


def add_ota_commands(sub: Any) -> None:
    """Register ``vigie ota``."""
    ota = sub.add_parser(
        "ota",
        formatter_class=_FMT,
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
    bundle.add_argument("--out", type=Path, required=True)
    bundle.set_defaults(handler=_bundle)
    publish = ota_sub.add_parser("publish", help="Sign a bundle into the repository.")
    publish.add_argument("bundle", type=Path)
    _repo(publish)
    publish.set_defaults(handler=_publish)
    listing = ota_sub.add_parser("list", help="Published targets.")
    _repo(listing)
    listing.set_defaults(handler=_list)
    revoke = ota_sub.add_parser("revoke", help="Withdraw a published target.")
    revoke.add_argument("target", help="e.g. models/ssd-coco-1.1.0.tar")
    _repo(revoke)
    revoke.set_defaults(handler=_revoke)
    refresh = ota_sub.add_parser(
        "refresh", help="Re-sign snapshot and timestamp (run daily: expiry is 1 day)."
    )
    _repo(refresh)
    refresh.set_defaults(handler=_refresh)


def add_update_command(edge_sub: Any) -> None:
    """Register ``vigie edge update``."""
    up = edge_sub.add_parser(
        "update",
        formatter_class=_FMT,
        help="Install a model update: TUF-verified, A/B slots, smoke test, rollback.",
        description="Download TARGET through TUF from the hub's repository, unpack it into the inactive "
        "slot, smoke-test it (loads, runs within the bundle's latency budget, sane outputs), switch "
        "atomically, check again, and roll back by itself if that fails. --recover finishes or undoes an "
        "update interrupted by a power cut.",
        epilog="Examples:\n"
        "  vigie edge update --repo https://hub.city.example/ota --target models/ssd-coco-1.1.0.tar\n"
        "  vigie edge update --recover\n",
    )
    up.add_argument("--repo", default=None, help="Base URL of the hub's TUF repository (…/ota).")
    up.add_argument("--target", default=None, help="Target name, e.g. models/ssd-coco-1.1.0.tar.")
    up.add_argument(
        "--ota-dir", type=Path, default=Path("/var/lib/vigie/ota"), help="Default /var/lib/vigie/ota."
    )
    up.add_argument(
        "--initial", type=Path, default=None, help="Install this trusted bundle as the first model."
    )
    up.add_argument("--recover", action="store_true", help="Finish or undo an interrupted update.")
    up.add_argument("--pause-at", default=None, help=argparse.SUPPRESS)  # tests: stop at a step
    up.set_defaults(handler=_update)


def _init(args: argparse.Namespace) -> int:
    from ota.repository import init_repository

    print(f"root metadata: {init_repository(args.repo)}")
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
        },
        args.out,
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
    info = publish(args.repo, args.bundle, manifest.target_name)
    print(f"published {manifest.target_name} ({info.length} bytes, sha256 {info.hashes['sha256'][:12]}…)")
    return 0


def _list(args: argparse.Namespace) -> int:
    from ota.repository import list_targets

    print(json.dumps(list_targets(args.repo), indent=2))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from ota.repository import revoke

    if not revoke(args.repo, args.target):
        print(f"vigie: error: {args.target} is not published (`vigie ota list`)", file=sys.stderr)
        return 2
    print(f"revoked {args.target}")
    return 0


def _refresh(args: argparse.Namespace) -> int:
    from ota.repository import refresh_timestamp

    print(f"timestamp version {refresh_timestamp(args.repo)}")
    return 0


def _update(args: argparse.Namespace) -> int:
    from edge.updater import ModelUpdater, UpdateError

    updater = ModelUpdater(args.ota_dir, args.repo or "", pause_at=args.pause_at)
    if args.recover:
        print(updater.recover())
        return 0
    if args.initial is not None:
        print(f"installed {updater.install_initial(args.initial).ref}")
        return 0
    if not args.repo or not args.target:
        print("vigie: error: give --repo and --target (or --recover, or --initial)", file=sys.stderr)
        return 2
    try:
        manifest = updater.update(args.target)
    except UpdateError as exc:
        print(f"vigie: update refused: {exc}", file=sys.stderr)
        return 1
    print(f"updated to {manifest.ref}")
    return 0
