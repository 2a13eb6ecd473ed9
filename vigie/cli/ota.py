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


def add_ota_commands(sub: Any, broker_options: Any = None) -> None:
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
    rotate = ota_sub.add_parser(
        "rotate-key",
        help="Replace a role's key (root, targets, snapshot, timestamp); devices follow by themselves.",
    )
    rotate.add_argument("role", choices=["root", "targets", "snapshot", "timestamp"])
    _repo(rotate)
    rotate.set_defaults(handler=_rotate)
    add_campaign_commands(ota_sub, broker_options)


def add_update_command(edge_sub: Any, broker_options: Any = None) -> None:
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
    up.add_argument("--max-kbps", type=float, default=None, help="Bandwidth cap for the download (kB/s).")
    up.add_argument("--pause-at", default=None, help=argparse.SUPPRESS)  # tests: stop at a step
    up.set_defaults(handler=_update)

    listen = edge_sub.add_parser(
        "ota-listen",
        formatter_class=_FMT,
        help="Wait for OTA campaign commands over MQTT and apply them (beside the agent).",
        description="Subscribes to vigie/v1/SITE/DEVICE/ota; installs (or rolls back) as the hub's campaign "
        "asks, through `vigie edge update`'s updater; reports each step on .../ota-state; tells the agent "
        "to reload its model after a switch (SIGHUP to the pid in --agent-pid-file).",
    )
    listen.add_argument("--site", required=True)
    listen.add_argument("--device", required=True)
    listen.add_argument("--repo", required=True, help="Base URL of the hub's TUF repository (…/ota).")
    listen.add_argument("--ota-dir", type=Path, default=Path("/var/lib/vigie/ota"))
    listen.add_argument(
        "--crash-watch",
        type=float,
        default=20.0,
        help="Seconds the agent must survive a switch before the update counts (default 20).",
    )
    listen.add_argument(
        "--agent-pid-file", type=Path, default=None, help="The agent's pid file (`edge run --pid-file`)."
    )
    if broker_options is not None:
        broker_options(listen)
    listen.set_defaults(handler=_listen)


def _listen(args: argparse.Namespace) -> int:
    import signal
    import threading

    from edge.ota.listener import OtaListener

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    listener = OtaListener(
        args.broker_config(args),
        args.site,
        args.device,
        args.ota_dir,
        args.repo,
        agent_pid_file=args.agent_pid_file,
        crash_watch_s=args.crash_watch,
    )
    listener.run(stop)
    return 0


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


def _rotate(args: argparse.Namespace) -> int:
    from ota.repository import rotate_key

    version = rotate_key(args.repo, args.role)
    print(f"{args.role} key replaced; root version {version} names the new key (the old one is retired)")
    return 0


def _refresh(args: argparse.Namespace) -> int:
    from ota.repository import refresh_timestamp

    print(f"timestamp version {refresh_timestamp(args.repo)}")
    return 0


def _update(args: argparse.Namespace) -> int:
    from edge.ota.updater import ModelUpdater, UpdateError

    cap = args.max_kbps * 1000 if args.max_kbps else None
    updater = ModelUpdater(args.ota_dir, args.repo or "", pause_at=args.pause_at, max_bytes_per_s=cap)
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


# -- campaigns ------------------------------------------------------------------------------------
def add_campaign_commands(ota_sub: Any, broker_options: Any) -> None:
    """Register ``vigie ota campaign …``; ``broker_options(parser)`` adds --broker and credentials."""
    camp = ota_sub.add_parser(
        "campaign",
        formatter_class=_FMT,
        help="Staged rollouts: waves, health gates, halt and rollback, pause/resume/abort.",
        description="A campaign sends a published target to the selected devices wave by wave (1 % canary, "
        "10 %, 50 %, 100 % by default). Between waves a health gate reads the devices' reports: too many "
        "failures, or a median inference latency over the limit, halts the campaign and tells the wave's "
        "devices that installed to go back to their previous model. Devices that fail their own smoke "
        "test never switch.",
        epilog="Example:\n  vigie ota campaign create --target models/ssd-coco-1.1.0.tar --version 1.1.0 "
        "--site vieux-port "
        "--run\n  vigie ota campaign show c-20261129-3f2a1b\n",
    )
    camp_sub = camp.add_subparsers(dest="campaign_command", metavar="ACTION", required=True)
    create = camp_sub.add_parser("create", help="Create a campaign (and run it with --run).")
    create.add_argument("--target", required=True, help="Published target, e.g. models/ssd-coco-1.1.0.tar.")
    create.add_argument("--version", required=True, help="Its version, e.g. 1.1.0.")
    create.add_argument("--devices", default=None, help="Comma-separated SITE/DEVICE list.")
    create.add_argument("--site", default=None, help="Every enrolled device of this site.")
    create.add_argument("--profile", default=None, help="Only devices of this hardware profile.")
    create.add_argument(
        "--waves", default="0.01,0.1,0.5,1", help="Cumulative fractions (default 0.01,0.1,0.5,1)."
    )
    create.add_argument(
        "--max-failure-rate", type=float, default=0.0, help="Tolerated share of failures per wave."
    )
    create.add_argument(
        "--max-latency-ms", type=float, default=None, help="Gate on median inference latency."
    )
    create.add_argument(
        "--max-drift",
        type=float,
        default=None,
        help="Gate on the median change in detections vs the previous model (0.3 = 30 %%).",
    )
    create.add_argument(
        "--wave-timeout", type=float, default=900, help="Seconds a wave may take (default 900)."
    )
    create.add_argument("--name", default=None, help="Campaign id (default generated).")
    create.add_argument("--run", action="store_true", help="Drive it now, with a progress bar.")
    _campaign_common(create, broker_options)
    create.set_defaults(handler=_campaign_create)
    run = camp_sub.add_parser("run", help="Drive a campaign to its end.")
    run.add_argument("id")
    _campaign_common(run, broker_options)
    run.set_defaults(handler=_campaign_run)
    for name, text in (
        ("list", "Campaigns and their state."),
        ("show", "One campaign's progress."),
        ("pause", "Pause (the current wave finishes; no new wave starts)."),
        ("resume", "Resume a paused campaign."),
        ("abort", "Stop for good."),
    ):
        p = camp_sub.add_parser(name, help=text)
        if name != "list":
            p.add_argument("id")
        _campaign_common(p, None)
        p.set_defaults(handler=_campaign_admin, action=name)


def _campaign_common(parser: argparse.ArgumentParser, broker_options: Any) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("VIGIE_HUB_STATE_DIR", "vigie-hub-state")),
        help="The hub's state folder (campaigns.db lives there).",
    )
    parser.add_argument(
        "--db", default=os.environ.get("VIGIE_HUB_DB", "vigie-hub.sqlite"), help="The hub's store."
    )
    if broker_options is not None:
        broker_options(parser)


def _campaign_store(args: argparse.Namespace) -> Any:
    from hub.campaigns import CampaignStore

    args.state_dir.mkdir(parents=True, exist_ok=True)
    return CampaignStore(args.state_dir / "campaigns.db")


def _campaign_create(args: argparse.Namespace) -> int:
    from ota.rollout import GatePolicy

    devices: list[str] = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else []
    if not devices:
        from hub.storage import open_store

        store = open_store(args.db)
        devices = [
            f"{e['site']}/{e['device']}"
            for e in store.list_enrolments()
            if e["revoked_at"] is None
            and (args.site is None or e["site"] == args.site)
            and (args.profile is None or e["profile"] == args.profile)
        ]
        store.close()
    policy = GatePolicy(
        max_failure_rate=args.max_failure_rate,
        max_latency_ms=args.max_latency_ms,
        timeout_s=args.wave_timeout,
        max_drift=args.max_drift,
    )
    fractions = [float(x) for x in args.waves.split(",")]
    doc = _campaign_store(args).create(
        args.target, args.version, devices, fractions=fractions, policy=policy, name=args.name
    )
    print(f"campaign {doc['id']}: {len(devices)} devices in waves of {[len(w) for w in doc['waves']]}")
    if args.run:
        args.id = doc["id"]
        return _campaign_run(args)
    return 0


def _campaign_run(args: argparse.Namespace) -> int:
    import threading

    from hub.campaigns import CampaignRunner, progress
    from vigie.progress import Progress

    store = _campaign_store(args)
    runner = CampaignRunner(store, args.id, args.broker_config(args))
    bar = Progress(f"campaign {args.id}", "devices", force=False)
    stop = threading.Event()
    result: dict[str, Any] = {}

    def drive() -> None:
        result.update(runner.run(stop))

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            p = progress(store.get(args.id))
            bar(p["installed"], p["devices"])
            thread.join(0.5)
    except KeyboardInterrupt:
        stop.set()
        thread.join(10)
    bar.done()
    p = progress(store.get(args.id))
    print(f"{p['id']}: {p['state']}, {p['installed']}/{p['devices']} installed, {p['failed']} failed")
    for entry in p["log"]:
        print(f"  {entry['event']}: {entry['why']}")
    return 0 if p["state"] == "done" else 1


def _campaign_admin(args: argparse.Namespace) -> int:
    from hub.campaigns import progress

    store = _campaign_store(args)
    if args.action == "list":
        for doc in store.list():
            p = progress(doc)
            print(f"{p['id']:<24} {p['state']:<8} {p['target']:<40} {p['installed']}/{p['devices']}")
        return 0
    if args.action == "show":
        print(json.dumps(progress(store.get(args.id)), indent=2))
        return 0
    state = {"pause": "paused", "resume": "running", "abort": "aborted"}[args.action]
    doc = store.set_state(args.id, state, f"operator: {args.action}")
    print(f"{doc['id']}: {doc['state']}")
    return 0
