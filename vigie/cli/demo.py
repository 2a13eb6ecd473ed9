"""``vigie demo``: broker, hub and agents on this machine; the demo itself is :mod:`vigie.demo`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vigie.cli.options import FMT

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``vigie demo``."""
    demo = sub.add_parser(
        "demo",
        formatter_class=FMT,
        help="Broker + hub + agents on street footage, on this machine.",
        description="Start a broker (Mosquitto, else the embedded amqtt), the hub on 127.0.0.1:8000 and "
        "agents replaying street footage in real time. Stop with Ctrl-C.",
        epilog="Then open:\n  http://127.0.0.1:8000/v1/events   anonymised counts as they arrive\n"
        "  http://127.0.0.1:8000/v1/devices  the agents, their heartbeats\n"
        "  http://127.0.0.1:8000/docs        the API\n",
    )
    demo.add_argument("--agents", type=int, default=2, help="How many agents (default 2).")
    demo.add_argument("--duration", type=float, default=None, help="Stop after N seconds (default: Ctrl-C).")
    demo.add_argument("--port", type=int, default=8000, help="Hub port (default 8000).")
    demo.add_argument(
        "--broker-port",
        type=int,
        default=None,
        help="Broker port (default 1883 if free, else any free port).",
    )
    demo.add_argument(
        "--footage",
        type=Path,
        default=None,
        help="Video to replay (default: vtest.avi from Debian's opencv-doc).",
    )
    demo.add_argument("--model-dir", type=Path, default=None, help="Model folder (default: fetch to cache).")
    demo.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="Where the demo keeps its databases and logs (default: a temporary folder).",
    )
    demo.add_argument("--embedded-broker", action="store_true", help="Use amqtt even if Mosquitto exists.")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from vigie.demo import DemoOptions, run_demo

    return run_demo(
        DemoOptions(
            agents=args.agents,
            duration=args.duration,
            port=args.port,
            broker_port=args.broker_port,
            footage=args.footage,
            model_dir=args.model_dir,
            workdir=args.workdir,
            embedded_broker=args.embedded_broker,
        )
    )
