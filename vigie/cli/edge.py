"""``vigie edge …``: the agent (run, snapshot) and the device's lifecycle (enrol, update, ota-listen).

Edge imports stay inside the handlers: ``vigie --help`` must not load OpenCV or LiteRT.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vigie.cli import edge_device
from vigie.cli.agent_args import agent_config
from vigie.cli.options import FMT, add_broker, add_credentials, line_arg, zone_arg

if TYPE_CHECKING:
    from edge.config import AgentConfig

__all__ = ["register"]

_RUN_DESCRIPTION = (
    "Read frames from a source, detect objects with the TFLite model, track them on the device, count "
    "them per zone and line over a window, apply the event rules, and publish only anonymised events "
    "over MQTT (QoS 1). Events wait in a durable outbox on disk until the hub's receipt says they are "
    "stored (sent again when none comes).\n\n"
    "Either give a site file (--config, with --device naming the camera) or the flags below.\n"
    "With --config, flags that change how this process runs override the file's camera: --source, "
    "--loop, --realtime, --fps-cap, --threads, --tiles, --model-dir, --ota-dir, --ota-repo, --outbox, "
    "--snapshot-dir, --drain-timeout, --resend-after and the broker flags (e.g. to try other footage). "
    "Flags that change what is counted or published are refused: --zone, --line, --window, --k and "
    "--epsilon come from the site file only (edit it, or drop --config); --site must match the file's.\n"
    "Signals: SIGHUP reloads the site file without a restart; SIGUSR1 saves a calibration snapshot "
    "(faces blurred, kept on the device only)."
)
_RUN_EPILOG = (
    "Examples:\n"
    "  vigie edge run --config firmware_configs/sites/demo.yaml --device cam-2\n"
    "  vigie edge run --config firmware_configs/sites/demo.yaml --device cam-2 --source other.avi\n"
    "  vigie edge run --site demo --device cam-1 --source street.avi --loop --realtime\n"
    "  vigie edge run --site demo --device cam-2 --source rtsp://10.0.0.5/stream1 --fps-cap 5\n"
    "  vigie edge run ... --zone 'quai=0,0.5;1,0.5;1,1;0,1' --line 'door=0.5,0;0.5,1' --k 3\n"
)


def register(sub: Any) -> None:
    """Add ``vigie edge`` and its actions."""
    edge = sub.add_parser("edge", help="The edge agent.", description="The edge agent.")
    edge_sub = edge.add_subparsers(dest="edge_command", metavar="ACTION", required=True)
    run = edge_sub.add_parser(
        "run",
        formatter_class=FMT,
        help="Detect, track, apply rules and publish anonymised events.",
        description=_RUN_DESCRIPTION,
        epilog=_RUN_EPILOG,
    )
    _run_source_options(run)
    _run_counting_options(run)
    _run_link_options(run)
    run.set_defaults(handler=_edge_run)
    _register_snapshot(edge_sub)
    _register_status(edge_sub)
    edge_device.register(edge_sub)


def _run_source_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("--config", type=Path, default=None, help="Site file (firmware_configs/sites/*.yaml).")
    run.add_argument("--device", required=True, help="Device slug; with --config, the camera to run.")
    run.add_argument(
        "--site",
        default=None,
        help="Site slug (a-z, 0-9, '-'); required without --config (with it, must match the file's).",
    )
    run.add_argument(
        "--source",
        default=None,
        help="Video file, image, folder of images, rtsp://…, http(s)://…, /dev/videoN or picamera2 "
        "(with --config: overrides the camera's).",
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
        default=None,
        help="OTA folder: run the model of its live slot (`vigie edge update`; SIGHUP after a switch); "
        "env VIGIE_OTA_DIR. With a repository (--ota-repo, or the hub recorded at enrolment) the agent "
        "also takes the hub's OTA campaign commands on its own MQTT connection.",
    )
    run.add_argument(
        "--ota-repo",
        default=None,
        metavar="URL",
        help="The hub's TUF repository (https://hub/ota) for OTA campaign commands; env VIGIE_OTA_REPO "
        "(default: the hub URL recorded at enrolment + /ota).",
    )
    run.add_argument("--tiles", type=int, default=None, help="Split frames into N×N tiles for dense scenes.")


def _run_counting_options(run: argparse.ArgumentParser) -> None:
    # Refused with --config (see agent_args.REFUSED): the site file decides what is counted.
    run.add_argument("--window", type=int, default=None, help="Aggregation window, seconds (default 60).")
    run.add_argument("--k", type=int, default=None, help="Send counts under k as '<k' (default 3; 1: off).")
    run.add_argument("--epsilon", type=float, default=None, help="Laplace noise on counts (default: off).")
    run.add_argument(
        "--zone",
        type=zone_arg,
        action="append",
        default=None,
        metavar="NAME=x,y;x,y;...",
        help="A zone polygon in normalised coordinates; repeat for several (default: the whole frame).",
    )
    run.add_argument(
        "--line",
        type=line_arg,
        action="append",
        default=None,
        metavar="NAME=x,y;x,y",
        help="A directed counting line a;b (forward: to the right of a→b on the picture).",
    )


def _run_link_options(run: argparse.ArgumentParser) -> None:
    add_broker(run, "MQTT broker", None)
    run.add_argument(
        "--outbox", type=Path, default=None, help="Durable outbox file (default ./vigie-outbox.sqlite)."
    )
    run.add_argument(
        "--snapshot-dir", type=Path, default=None, help="Where SIGUSR1 snapshots go (local only)."
    )
    add_credentials(run)
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


def _register_snapshot(edge_sub: Any) -> None:
    snap = edge_sub.add_parser(
        "snapshot",
        formatter_class=FMT,
        help="Save one frame with zones and lines drawn and faces blurred (calibration).",
        description="For technicians calibrating zones and lines: take one frame from the camera, blur "
        "every face and every person's upper body (BlazeFace; refused without its model: `vigie model "
        "fetch`), draw the zones and the lines with their forward direction, and save it on this device "
        "only. Snapshots are deleted after snapshot_ttl_s (default 1 h) and never published.",
        epilog="Example:\n  vigie edge snapshot --config firmware_configs/sites/demo.yaml --device cam-2\n",
    )
    snap.add_argument("--config", type=Path, required=True, help="Site file.")
    snap.add_argument("--device", required=True, help="The camera.")
    snap.add_argument("--model-dir", type=Path, default=None, help="Folder holding the model files.")
    snap.add_argument(
        "--face-model",
        type=Path,
        default=None,
        help="face_detection_full_range.tflite (default: the model folder, then the cache; required).",
    )
    snap.add_argument(
        "--snapshot-dir", type=Path, default=None, help="Where to save (default ./vigie-snapshots)."
    )
    snap.add_argument("--skip", type=int, default=0, help="Frames to skip first (default 0).")
    snap.set_defaults(handler=_edge_snapshot)


def _register_status(edge_sub: Any) -> None:
    status = edge_sub.add_parser(
        "status",
        formatter_class=FMT,
        help="What the agent on this box is doing, and what is wrong (for the technician on site).",
        description="Read the status file the agent rewrites beside its outbox (every heartbeat period and "
        "whenever a trouble starts or ends): connection to the broker, outbox, and each trouble (broker, "
        "certificate, disk) with its cause, since when and the next retry. Needs no network. Exit status "
        "0 when the agent runs connected without trouble, 1 otherwise.",
        epilog="Examples:\n  vigie edge status\n  vigie edge status --outbox /var/lib/vigie/cam-1.sqlite\n",
    )
    status.add_argument(
        "--outbox", type=Path, default=Path("vigie-outbox.sqlite"),
        help="The agent's outbox (default ./vigie-outbox.sqlite); the status file is beside it.",
    )  # fmt: skip
    status.add_argument("--json", action="store_true", help="Print the status file as it is.")
    status.set_defaults(handler=_edge_status)


# -- handlers ---------------------------------------------------------------------------------
def _edge_run(args: argparse.Namespace) -> int:
    from edge.agent import AgentControl, run_agent

    config, reload = agent_config(args)
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
    from edge.detectors.factory import build_detector
    from edge.snapshot import save_snapshot
    from edge.sources import open_source, redact_url
    from vigie.exceptions import ConfigError

    config, _ = agent_config(args)
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


def _edge_status(args: argparse.Namespace) -> int:
    import json
    import time

    from edge.status import format_status, read_status, status_path

    body = read_status(status_path(args.outbox))
    print(json.dumps(body, indent=1, sort_keys=True) if args.json else format_status(body))
    fresh = time.time() - float(body.get("updated_at", 0)) < 120
    healthy = fresh and body.get("state") == "running" and body.get("connected") and not body.get("troubles")
    return 0 if healthy else 1
