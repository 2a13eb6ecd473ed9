"""``vigie ota campaign …``: staged rollouts of a published model to the fleet.

With ``--hub URL`` (or VIGIE_HUB_URL) every action is a call to the hub's API and the hub runs the
campaign (``hub/campaign_service.py``); ``run`` then only follows it. Without it, the command works
on the store (``--db``) directly and ``run`` drives the campaign from this process, under the same
lease as the hub's service (a campaign a hub is running is only followed).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from vigie.cli.hub_client import HubClient, add_hub_options
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
        "--run\n  vigie ota campaign show c-20261129-3f2a1b\n"
        "  VIGIE_HUB_URL=https://hub:8000 VIGIE_HUB_TOKEN=vgk_… vigie ota campaign promote c-20261129-3f2a\n",
    )
    camp_sub = camp.add_subparsers(dest="campaign_command", metavar="ACTION", required=True)
    create = camp_sub.add_parser("create", help="Create a campaign (and run it with --run).")
    create.add_argument("--target", required=True, help="Published target, e.g. models/ssd-coco-1.1.0.tar.")
    create.add_argument("--version", required=True, help="Its version, e.g. 1.1.0.")
    create.add_argument("--devices", default=None, help="Comma-separated SITE/DEVICE list.")
    create.add_argument("--site", default=None, help="Every enrolled device of this site.")
    create.add_argument("--profile", default=None, help="Only devices of this hardware profile.")
    create.add_argument("--tag", default=None, help="Only devices with this operators' tag.")
    create.add_argument(
        "--model", default=None, help="Only devices running this model now (`ssd-coco` or `ssd-coco@1.0.0`)."
    )
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
    create.add_argument(
        "--max-restarts",
        type=int,
        default=2,
        help="Agent restarts on the new model (seen in heartbeats) beyond which a device is crash-looping "
        "and counts as failed (default 2).",
    )
    create.add_argument(
        "--soak", type=float, default=0, help="Seconds a wave runs on the new model before it may pass."
    )
    create.add_argument("--name", default=None, help="Campaign id (default generated).")
    create.add_argument(
        "--run", action="store_true", help="Drive (or, with --hub, follow) it, with a progress bar."
    )
    _campaign_common(create, broker=True)
    create.set_defaults(handler=_campaign_create)
    run = camp_sub.add_parser(
        "run", help="Drive a campaign to its end (with --hub: follow the hub driving it)."
    )
    run.add_argument("id")
    _campaign_common(run, broker=True)
    run.set_defaults(handler=_campaign_run)
    for name, text in (
        ("list", "Campaigns and their state."),
        ("show", "One campaign's progress."),
        ("pause", "Pause (the current wave finishes; no new wave starts)."),
        ("resume", "Resume a paused campaign."),
        ("abort", "Stop for good."),
        ("promote", "Let the current wave through its gate now: the next wave starts."),
    ):
        p = camp_sub.add_parser(name, help=text)
        if name != "list":
            p.add_argument("id")
        _campaign_common(p, broker=False)
        p.set_defaults(handler=_campaign_admin, action=name)


def _campaign_common(parser: argparse.ArgumentParser, *, broker: bool) -> None:
    # Campaigns live in the hub's store: every hub host on one PostgreSQL shares them.
    add_hub_options(parser)
    add_db(parser)
    if broker:
        add_broker_options(parser)


def _campaign_store(args: argparse.Namespace) -> Any:
    from hub.campaigns import CampaignStore

    return CampaignStore.open(hub_settings(args).db)


def _selector(args: argparse.Namespace) -> dict[str, list[str]]:
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
    chosen = {"devices": devices, "sites": args.site, "profiles": args.profile, "models": args.model,
              "tags": args.tag}  # fmt: skip
    return {k: v if isinstance(v, list) else [v] for k, v in chosen.items() if v is not None}


def _campaign_create(args: argparse.Namespace) -> int:
    from ota.rollout import GatePolicy

    policy = GatePolicy(
        max_failure_rate=args.max_failure_rate,
        max_latency_ms=args.max_latency_ms,
        timeout_s=args.wave_timeout,
        max_drift=args.max_drift,
        max_restarts=args.max_restarts,
        soak_s=args.soak,
    )
    fractions = [float(x) for x in args.waves.split(",")]
    if args.hub:
        body = {"target": args.target, "version": args.version, "selector": _selector(args),
                "waves": fractions, "policy": policy.model_dump(), "name": args.name}  # fmt: skip
        shown = HubClient.from_args(args).call("POST", "/v1/campaigns", body)
        print(
            f"campaign {shown['id']}: {shown['devices']} devices in {shown['waves']} waves (run by the hub)"
        )
        args.id = shown["id"]
        return _campaign_run(args) if args.run else 0
    devices = _local_devices(args)
    doc = _campaign_store(args).create(
        args.target, args.version, devices, fractions=fractions, policy=policy, name=args.name
    )
    print(f"campaign {doc['id']}: {len(devices)} devices in waves of {[len(w) for w in doc['waves']]}")
    if args.run:
        args.id = doc["id"]
        return _campaign_run(args)
    return 0


def _local_devices(args: argparse.Namespace) -> list[str]:
    """Without --hub: a --devices list as given (enrolled or not), else the registry through the selector."""
    if args.devices:
        return [d.strip() for d in args.devices.split(",") if d.strip()]
    from hub.campaign_select import Selector, select_devices
    from hub.storage import open_store

    store = open_store(hub_settings(args).db)
    try:
        selector = Selector(**_selector(args))
        return select_devices(
            store.list_enrolments(), store.list_devices(), selector, store.list_device_tags()
        )
    finally:
        store.close()


def _campaign_run(args: argparse.Namespace) -> int:
    import threading

    from vigie.progress import Progress

    bar = Progress(f"campaign {args.id}", "devices", force=False)
    done = threading.Event()
    driver: threading.Thread | None = None
    if args.hub:
        client = HubClient.from_args(args)

        def read() -> dict[str, Any]:
            shown: dict[str, Any] = client.call("GET", f"/v1/campaigns/{args.id}")
            return shown
    else:
        from hub.campaign_service import CampaignService
        from hub.campaigns import progress

        store = _campaign_store(args)
        service = CampaignService(store, broker_config(args), only=args.id)

        def read() -> dict[str, Any]:
            return progress(store.get(args.id))

        driver = threading.Thread(target=service.run, args=(done,), daemon=True)
        driver.start()
    try:
        p = read()
        while p["state"] in ("running", "paused") and (driver is None or driver.is_alive()):
            bar(p["installed"], p["devices"])
            done.wait(0.5)
            p = read()
    except KeyboardInterrupt:
        pass
    finally:
        done.set()
        if driver is not None:
            driver.join(15)  # hands its lease back
    p = read()
    bar.done()
    print(f"{p['id']}: {p['state']}, {p['installed']}/{p['devices']} installed, {p['failed']} failed")
    for entry in p["log"]:
        print(f"  {entry['event']}: {entry['why']}")
    return 0 if p["state"] == "done" else 1


def _campaign_admin(args: argparse.Namespace) -> int:
    if args.hub:
        client = HubClient.from_args(args)
        if args.action == "list":
            rows = client.call("GET", "/v1/campaigns")["data"]
        elif args.action == "show":
            print(json.dumps(client.call("GET", f"/v1/campaigns/{args.id}"), indent=2))
            return 0
        else:
            shown = client.call("POST", f"/v1/campaigns/{args.id}/{args.action}")
            print(f"{shown['id']}: {shown['state']}")
            return 0
    else:
        from hub.campaigns import progress

        store = _campaign_store(args)
        if args.action == "show":
            print(json.dumps(progress(store.get(args.id)), indent=2))
            return 0
        if args.action not in ("list", "show"):
            reason = f"operator: {args.action}"
            doc = (
                store.promote(args.id, reason)
                if args.action == "promote"
                else store.set_state(
                    args.id, {"pause": "paused", "resume": "running", "abort": "aborted"}[args.action], reason
                )
            )
            print(f"{doc['id']}: {doc['state']}")
            return 0
        rows = [progress(doc) for doc in store.list()]
    for p in rows:
        print(f"{p['id']:<24} {p['state']:<8} {p['target']:<40} {p['installed']}/{p['devices']}")
    return 0
