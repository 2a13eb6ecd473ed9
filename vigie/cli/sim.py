"""``vigie sim``: a simulated fleet against a real broker (load tests); the fleet is :mod:`vigie.sim`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from vigie.cli.options import DEFAULT_BROKER, FMT, add_broker, broker_arg

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``vigie sim``."""
    sim = sub.add_parser(
        "sim",
        formatter_class=FMT,
        help="Simulate a fleet of devices against a real broker (load tests).",
        description="Run N simulated devices in one process, each with its own MQTT connection: a retained "
        "online status, a heartbeat every --heartbeat seconds, one zone_count event per zone per window "
        "(QoS 1), starts spread at --connect-rate per second, and an optional reconnect storm. Like an "
        "agent, each device keeps its events until the hub's receipt names them, sends them again (same id) "
        "when no receipt comes within --resend-after seconds (the wait doubling), and after the run waits up "
        "to --drain seconds for its last receipts. Prints what the broker acknowledged and the hub "
        "receipted; exits 1 if a device never connected or an event stayed unreceipted.",
        epilog="Examples:\n  vigie sim --devices 1000 --duration 120 --broker 127.0.0.1:1883\n"
        "  vigie sim --devices 10000 --duration 300 --heartbeat 30 --storm-at 150\n"
        "  vigie sim --devices 100 --no-receipts   # a bare broker, no hub: the PUBACK is the end\n",
    )
    sim.add_argument("--devices", type=int, default=100, help="Simulated devices (default 100).")
    sim.add_argument("--duration", type=float, default=60.0, help="Seconds to run (default 60).")
    add_broker(sim, "MQTT broker the fleet connects to", DEFAULT_BROKER)
    sim.add_argument(
        "--failover",
        type=broker_arg,
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="Another node to move to when the connection is lost or refused (repeatable: a NATS cluster).",
    )
    sim.add_argument("--site", default="sim", help="Site slug of the simulated devices (default sim).")
    sim.add_argument("--zones", type=int, default=2, help="Zones per device (default 2).")
    sim.add_argument("--window", type=int, default=10, help="Event window in seconds (default 10).")
    sim.add_argument("--heartbeat", type=float, default=30.0, help="Seconds between heartbeats (default 30).")
    sim.add_argument("--storm-at", type=float, default=None, help="Drop and reconnect every device at T s.")
    sim.add_argument("--connect-rate", type=float, default=500.0, help="New connections per second (500).")
    sim.add_argument("--ota", action="store_true", help="Answer OTA campaign commands like real devices.")
    sim.add_argument(
        "--no-receipts",
        dest="receipts",
        action="store_false",
        help="Do not wait for the hub's receipts (a bare broker with no hub); the hub always sends them.",
    )
    sim.add_argument(
        "--resend-after", type=float, default=10.0, help="Send an unreceipted event again after S s (10)."
    )
    sim.add_argument("--drain", type=float, default=30.0, help="After the run, wait S s for receipts (30).")
    sim.set_defaults(handler=_sim)


def _sim(args: argparse.Namespace) -> int:
    from vigie.sim import SimOptions, run_fleet

    opts = SimOptions(
        devices=args.devices,
        duration_s=args.duration,
        host=args.broker[0],
        port=args.broker[1],
        failover=tuple(args.failover),
        site=args.site,
        zones=args.zones,
        window_s=args.window,
        heartbeat_s=args.heartbeat,
        storm_at_s=args.storm_at,
        connect_rate=args.connect_rate,
        ota=args.ota,
        receipts=args.receipts,
        resend_after_s=args.resend_after,
        drain_s=args.drain,
    )
    target = f"{opts.host}:{opts.port}"
    print(
        f"simulating {opts.devices} devices for {opts.duration_s:.0f} s against {target} ...", file=sys.stderr
    )
    r = run_fleet(opts)
    rate = r.events_acked / max(r.elapsed_s, 1e-9)
    print(f"devices connected {r.connected}/{opts.devices}, reconnects {r.reconnects}, "
          f"connect failures {r.connect_failures}, on a failover node at the end {r.moved}")  # fmt: skip
    print(f"events acknowledged by the broker {r.events_acked} (failed {r.events_failed}), "
          f"heartbeats {r.heartbeats}, in {r.elapsed_s:.1f} s ({rate:.0f} events/s)")  # fmt: skip
    if opts.receipts:
        print(f"events receipted by the hub {r.events_receipted} of {r.events_produced}, "
              f"sent again {r.events_resent}, unreceipted {r.unreceipted}")  # fmt: skip
    elif r.unreceipted:
        print(f"events never acknowledged by the broker {r.unreceipted} of {r.events_produced}")
    if opts.ota:
        print(f"OTA: {r.ota_installed} installed, {r.ota_failed} failed")
    return 0 if r.connected == opts.devices and r.unreceipted == 0 else 1
