"""``vigie hub init|enrol-token|devices|revoke|broker-config``: the fleet's identity.

The device side, ``vigie edge enrol``, is in :mod:`vigie.cli.edge_device`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from vigie.cli.options import FMT, add_db, add_state_dir, duration_arg, hub_settings

__all__ = ["devices_table", "register"]


def _add_state(parser: argparse.ArgumentParser) -> None:
    add_db(parser)
    add_state_dir(parser)


def _service(args: argparse.Namespace) -> Any:
    from hub.enrolment import EnrolmentService
    from hub.storage import open_store

    settings = hub_settings(args)
    state = settings.hub_state()
    assert state is not None  # hub_settings always sets state_dir when the command has --state-dir
    return EnrolmentService(open_store(settings.db), state)


def register(hub_sub: Any) -> None:
    """Add the fleet-identity actions under ``vigie hub``."""
    _register_init(hub_sub)
    _register_enrol_token(hub_sub)
    _register_registry(hub_sub)


def _register_init(hub_sub: Any) -> None:
    init = hub_sub.add_parser(
        "init",
        formatter_class=FMT,
        help="Create the hub's device CA, OTA trust root and broker TLS configuration.",
        description="Create, in the state folder: pki/ (the device CA, and the broker's TLS certificate "
        "for the names given with --broker-host), ota/ (TUF keys and root metadata), broker/ "
        "(mosquitto.conf, ACL, the hub's broker password). Run once per hub; it refuses to overwrite.",
        epilog="Example:\n  vigie hub init --state-dir /var/lib/vigie-hub --broker-host mqtt.city.example "
        "--broker-host 10.0.0.2\n  mosquitto -c /var/lib/vigie-hub/broker/mosquitto.conf\n",
    )
    _add_state(init)
    init.add_argument(
        "--broker-host",
        action="append",
        default=None,
        help="Name or address devices use to reach the broker; repeat for several (default localhost).",
    )
    keys = init.add_mutually_exclusive_group()
    keys.add_argument(
        "--offline-keys",
        type=Path,
        default=None,
        metavar="DIR",
        help="Where the TUF root and targets keys go (default: beside the state folder, "
        "STATE_DIR-offline-keys); move that folder to a removable medium kept off the hub. The hub "
        "keeps snapshot and timestamp; "
        "publishing takes the targets key with `vigie ota publish --keys DIR` (docs/security.md).",
    )
    keys.add_argument(
        "--dev-online-keys",
        action="store_true",
        help="Development only: keep all four TUF keys in the state folder (a compromised hub could then "
        "sign any model for every camera).",
    )
    init.set_defaults(handler=_hub_init)


def _register_enrol_token(hub_sub: Any) -> None:
    token = hub_sub.add_parser(
        "enrol-token",
        formatter_class=FMT,
        help="Create a one-time enrolment token for a device.",
        description="Tokens are single-use and expire; the hub stores only their hash, so the token is "
        "shown once. Give it to the provisioning playbook (vault) or to `vigie edge enrol`.",
        epilog="Example:\n"
        "  vigie hub enrol-token create --site vieux-port --profile rpi5 --device cam-3 --ttl 24h\n",
    )
    token_sub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = token_sub.add_parser("create", help="Create a token.", formatter_class=FMT)
    _add_state(create)
    create.add_argument("--site", required=True, help="Site slug the device belongs to.")
    create.add_argument(
        "--profile", required=True, help="Hardware profile (rpi4, rpi5, jetson-orin-nano, ...)."
    )
    create.add_argument("--device", default=None, help="Bind the token to this device slug (recommended).")
    create.add_argument(
        "--ttl", type=duration_arg, default="24h", help="Validity: 30m, 24h, 7d (default 24h)."
    )
    create.add_argument("--quiet", action="store_true", help="Print the token only (for scripts).")
    create.set_defaults(handler=_hub_token_create)


def _register_registry(hub_sub: Any) -> None:
    devices = hub_sub.add_parser(
        "devices",
        formatter_class=FMT,
        help="List enrolled devices: certificate, status, last seen.",
        description="One line per device known to the registry or seen on the broker.",
        epilog="Example:\n  vigie hub devices --db postgresql://vigie@db/vigie\n",
    )
    _add_state(devices)
    devices.add_argument("--json", action="store_true", help="JSON instead of a table.")
    devices.set_defaults(handler=_hub_devices)

    revoke = hub_sub.add_parser(
        "revoke",
        formatter_class=FMT,
        help="Revoke a device's certificate; the broker refuses it from now on.",
        description="Adds the certificate to the CRL, removes the device from the ACL and reloads the "
        "broker. The device's data already stored stays (retention applies).",
        epilog="Example:\n  vigie hub revoke vieux-port/cam-3\n",
    )
    _add_state(revoke)
    revoke.add_argument("device", help="SITE/DEVICE")
    revoke.set_defaults(handler=_hub_revoke)

    bc = hub_sub.add_parser(
        "broker-config",
        formatter_class=FMT,
        help="Rewrite the broker's CRL, ACL and configuration from the registry, and reload it.",
        description="The hub does this by itself on start, enrolment and revocation; run it by hand "
        "after restoring a backup, or from a daily timer to refresh the CRL's validity.",
    )
    _add_state(bc)
    bc.add_argument("--no-reload", action="store_true", help="Write the files only.")
    bc.set_defaults(handler=_hub_broker_config)


# -- handlers -----------------------------------------------------------------------------
def _hub_init(args: argparse.Namespace) -> int:
    from hub.broker_config import refresh_broker
    from hub.pki import DeviceCA
    from hub.storage import open_store

    settings = hub_settings(args)
    state = settings.hub_state()
    assert state is not None
    hosts = args.broker_host or ["localhost", "127.0.0.1"]
    offline = state.init(hosts, offline_keys=args.offline_keys, dev_online_keys=args.dev_online_keys)
    store = open_store(settings.db)
    refresh_broker(store, DeviceCA.load(state.pki), state.layout, reload=False)
    store.close()
    print(f"device CA     {state.pki / 'ca.crt'}")
    print(f"OTA root      {state.ota / 'metadata' / 'root.json'}")
    if offline is not None:
        print(f"offline keys  {offline} (TUF root and targets)")
    else:
        print("online keys   all four TUF keys are in the state folder (--dev-online-keys: development only)")
    print(f"broker config {state.layout.folder / 'mosquitto.conf'} (TLS for: {', '.join(hosts)})")
    print(f"\nnext: run the broker with it, start the hub with VIGIE_HUB_STATE_DIR={state.folder}, then\n"
          "      vigie hub enrol-token create --site SITE --profile PROFILE --device DEVICE")  # fmt: skip
    if offline is not None:
        print(
            f"\nNOW move {offline} to a removable medium (two copies, kept in a safe) and delete it here:\n"
            "whoever holds these keys decides what model every camera runs. Mount the medium only to\n"
            "publish: vigie ota publish BUNDLE --keys /media/vigie-keys (docs/security.md).",
            file=sys.stderr,
        )
    return 0


def _hub_token_create(args: argparse.Namespace) -> int:
    from hub.enrolment import parse_duration

    ttl = parse_duration(args.ttl)
    token = _service(args).create_token(args.site, args.profile, device=args.device, ttl_s=ttl)
    if args.quiet:
        print(token)
        return 0
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(time.time() + ttl))
    who = f"{args.site}/{args.device}" if args.device else f"any device of site {args.site}"
    print(token)
    print(
        f"\nsingle-use, for {who} (profile {args.profile}), valid until {until}.\n"
        "It is shown only once: put it in the inventory's vault (vigie_enrol_token).",
        file=sys.stderr,
    )
    return 0


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = max(0.0, time.time() - seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.0f}{unit} ago"
    return f"{s:.0f}s ago"


def devices_table(enrolled: list[dict[str, Any]], seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Join the registry with what the broker saw: one row per site/device."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for e in enrolled:
        rows[(e["site"], e["device"])] = {
            "device": f"{e['site']}/{e['device']}", "profile": e["profile"],
            "enrolment": "revoked" if e["revoked_at"] else "enrolled",
            "cert_expires": time.strftime("%Y-%m-%d", time.gmtime(e["not_after"])),
            "fingerprint": e["fingerprint"][:16], "last_seen": None, "status": None, "events": 0,
            "clock_skew_s": None, "outbox_dropped": None,
        }  # fmt: skip
    for d in seen:
        row = rows.setdefault(
            (d["site"], d["device"]),
            {"device": f"{d['site']}/{d['device']}", "profile": "", "enrolment": "not enrolled",
             "cert_expires": "", "fingerprint": ""},
        )  # fmt: skip
        beat = d.get("heartbeat") or {}
        row.update({
            "last_seen": d.get("last_seen"), "status": d.get("status"), "events": d.get("events", 0),
            "clock_skew_s": beat.get("clock_skew_s"), "outbox_dropped": beat.get("outbox_dropped"),
        })  # fmt: skip
    return [rows[k] for k in sorted(rows)]


def _hub_devices(args: argparse.Namespace) -> int:
    import json

    from hub.storage import open_store

    store = open_store(hub_settings(args).db)
    rows = devices_table(store.list_enrolments(), store.list_devices())
    store.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no devices yet: `vigie hub enrol-token create --help` shows how to enrol one")
        return 0
    headers = ["DEVICE", "PROFILE", "ENROLMENT", "CERT EXPIRES", "STATUS", "LAST SEEN", "EVENTS", "CLOCK",
               "DROPPED"]  # fmt: skip
    table = [
        [r["device"], r["profile"], r["enrolment"], r["cert_expires"], r["status"] or "-",
         _age(r["last_seen"]), str(r["events"] or 0), _skew(r.get("clock_skew_s")),
         "-" if r.get("outbox_dropped") is None else str(r["outbox_dropped"])]
        for r in rows
    ]  # fmt: skip
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths, strict=True)))
    return 0


def _skew(seconds: int | None) -> str:
    """A device clock's offset for the table: ``ok``, or e.g. ``-2h00m`` / ``+10m`` (fix its NTP)."""
    if seconds is None:
        return "-"
    if seconds == 0:
        return "ok"
    sign, left = ("+" if seconds > 0 else "-"), abs(seconds)
    hours, minutes = divmod(left // 60, 60)
    if hours:
        return f"{sign}{hours}h{minutes:02d}m"
    return f"{sign}{minutes}m" if minutes else f"{sign}{left}s"


def _hub_revoke(args: argparse.Namespace) -> int:
    from hub.enrolment import parse_device_ref

    site, device = parse_device_ref(args.device)
    serial = _service(args).revoke(site, device)
    print(f"revoked {site}/{device} (certificate serial {serial}); the broker refuses it from now on")
    return 0


def _hub_broker_config(args: argparse.Namespace) -> int:
    from hub.broker_config import refresh_broker

    service = _service(args)
    refresh_broker(service.store, service.ca, service.state.layout, reload=not args.no_reload)
    print(f"wrote {service.state.layout.folder / 'mosquitto.conf'}, acl and {service.ca.folder / 'crl.pem'}")
    return 0
