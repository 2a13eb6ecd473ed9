#!/usr/bin/env python3
"""Per-frame cost of the agent's pipeline against the raw TFLite interpreter, side by side.

Baseline: `interpreter.invoke()` alone on an input already resized to 300x300.
Ours: the agent's whole per-frame path on the same 768x576 CCTV frames: resize
and convert, invoke, decode the SSD outputs, count per zone (two zones), aggregate.
The ratio (ours / baseline) is the overhead the agent adds around inference.

    .venv/bin/python bench/bench_pipeline.py [--frames 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
from edge.aggregate import WindowAggregator

from edge import model_store
from edge.detectors.litert import LiteRTDetector, load_interpreter_class
from edge.zones import Zone, count_by_zone

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model-dir", type=Path, default=SHARED / "models")
    parser.add_argument("--video", type=Path, default=SHARED / "media" / "vtest.avi")
    args = parser.parse_args()

    cap = cv2.VideoCapture(str(args.video))
    frames = []
    while len(frames) < args.frames:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    manifest = model_store.load_manifest()
    model, labels = model_store.locate(manifest, args.model_dir)
    detector = LiteRTDetector(
        model,
        model_store.read_labels(labels),
        model_ref=manifest.ref,
        threads=args.threads,
        class_scores=manifest.class_scores,
    )
    interpreter_cls, runtime = load_interpreter_class()
    raw = interpreter_cls(model_path=str(model), num_threads=args.threads)
    raw.allocate_tensors()
    index = raw.get_input_details()[0]["index"]
    inputs = [cv2.resize(f, (300, 300))[np.newaxis] for f in frames]
    zones = [
        Zone(name="left", polygon=((0, 0), (0.5, 0), (0.5, 1), (0, 1))),
        Zone(name="right", polygon=((0.5, 0), (1, 0), (1, 1), (0.5, 1))),
    ]
    agg = WindowAggregator(site="b", device="b", zones=["left", "right"], window_s=10, model_ref=manifest.ref)
    classes = frozenset({"person", "car", "bus", "truck", "bicycle", "motorcycle"})

    def baseline(i: int) -> None:
        raw.set_tensor(index, inputs[i])
        raw.invoke()

    def ours(i: int) -> None:
        agg.add(time.time(), count_by_zone(detector.detect(frames[i]), zones, classes))

    for fn in (baseline, ours):  # warm-up
        for i in range(min(10, len(frames))):
            fn(i)
    base_ms: list[float] = []
    ours_ms: list[float] = []
    # Interleaved, so that both see the same machine state.
    for i in range(len(frames)):
        t = time.perf_counter()
        baseline(i)
        base_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        ours(i)
        ours_ms.append((time.perf_counter() - t) * 1000)
    b, o = statistics.median(base_ms), statistics.median(ours_ms)
    height, width = frames[0].shape[:2]
    print(f"runtime {runtime}, threads {args.threads}, {len(frames)} frames of {width}x{height}")
    print(f"baseline invoke() median {b:.2f} ms   p95 {np.percentile(base_ms, 95):.2f} ms")
    p95 = np.percentile(ours_ms, 95)
    print(f"agent per-frame median   {o:.2f} ms   p95 {p95:.2f} ms   ({1000 / o:.0f} fps)")
    print(f"ratio ours/baseline = {o / b:.3f}")


if __name__ == "__main__":
    main()
