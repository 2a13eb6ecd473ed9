"""``vigie ota campaign …``: staged rollouts of a published model to the fleet."""

from __future__ import annotations

import argparse
import json
from typing import Any

from vigie.cli.options import FMT, add_broker_options, add_db, broker_config, hub_settings

__all__ = ["register"]


def register(ota_sub: Any) -> None:
    """Add ``campaign`` and its actions under ``vigie ota``."""
    camp = ota_sub.add_parser(
        "campaign",
        formatter_class=FMT,
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
    _campaign_common(create, broker=True)
    create.set_defaults(handler=_campaign_create)
    run = camp_sub.add_parser("run", help="Drive a campaign to its end.")
    run.add_argument("id")
    _campaign_common(run, broker=True)
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
        _campaign_common(p, broker=False)
        p.set_defaults(handler=_campaign_admin, action=name)


def _campaign_common(parser: argparse.ArgumentParser, *, broker: bool) -> None:
    # Campaigns live in the hub's store: every hub host on one PostgreSQL shares them.
    add_db(parser)
    if broker:
        add_broker_options(parser)


def _campaign_store(args: argparse.Namespace) -> Any:
    from hub.campaigns import CampaignStore

    return CampaignStore.open(hub_settings(args).db)


def _campaign_create(args: argparse.Namespace) -> int:
    from ota.rollout import GatePolicy

    devices: list[str] = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else []
    if not devices:
        from hub.storage import open_store

        store = open_store(hub_settings(args).db)
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
    runner = CampaignRunner(store, args.id, broker_config(args))
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
