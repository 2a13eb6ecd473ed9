#!/usr/bin/env python3
"""The whole edge agent against the raw interpreter, in one process, on the same frames.

1. Baseline: the raw TFLite interpreter alone over the frames of vtest.avi
   (decode, BGR→RGB, resize, invoke), same thread count.
2. Ours: the full agent, `run_agent`, on the same file: decode → detect → track
   → rules → anonymise → outbox → publish to a real Mosquitto started here.

Prints frames/s of both, the ratio ours/baseline (target ≥ 0.90 at 2 threads),
the process's peak RSS (target ≤ 250 MB) and the agent's CPU milliseconds per frame
(its whole run: model loading and drain included). Wall-clock rates swing by ±30 % on
a shared machine; CPU time per frame barely moves, so it is the number to compare
between two versions of the agent.

    .venv/bin/python bench/edge_pipeline.py [--threads 2]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from edge import model_store
from edge.agent import AgentControl, run_agent
from edge.config import AgentConfig
from edge.detectors.litert import load_interpreter_class
from vigie.broker import start_broker
from vigie.mqtt import BrokerConfig
from vigie.netutil import free_port

SHARED = Path(__file__).resolve().parents[2] / "shared"


def baseline(video: Path, model: Path, threads: int, limit: int) -> tuple[int, float]:
    interpreter_cls, _ = load_interpreter_class()
    interp = interpreter_cls(model_path=str(model), num_threads=threads)
    interp.allocate_tensors()
    index = interp.get_input_details()[0]["index"]
    cap = cv2.VideoCapture(str(video))
    n = 0
    t0 = time.perf_counter()
    while n < limit:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        interp.set_tensor(index, cv2.resize(rgb, (300, 300), interpolation=cv2.INTER_AREA)[np.newaxis])
        interp.invoke()
        n += 1
    return n, time.perf_counter() - t0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ours(video: Path, model_dir: Path, threads: int, workdir: Path) -> tuple[int, float, int, int, float]:
    broker = start_broker(workdir / "broker", free_port())
    config = AgentConfig.model_validate({
        "site": "bench", "device": "cam-1", "source": str(video), "model_dir": model_dir, "threads": threads,
        "outbox": workdir / "outbox.sqlite", "broker": BrokerConfig(port=broker.port),
        "anonymisation": {"window_s": 10, "k": 2},
        "zones": [
            {"name": "left", "polygon": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]], "area_m2": 150},
            {"name": "right", "polygon": [[0.5, 0], [1, 0], [1, 1], [0.5, 1]], "area_m2": 150},
        ],
        "lines": [{"name": "middle", "a": [0.5, 0], "b": [0.5, 1]}],
        "rules": [
            {"type": "crowd_density", "zone": "right", "threshold": 0.02, "min_duration_s": 1},
            {"type": "wrong_way", "line": "middle", "allowed": "forward", "cooldown_s": 1},
            {"type": "intrusion", "zone": "left", "dwell_s": 5},
            {"type": "person_down", "zone": "right"},
            {"type": "abandoned_object", "zone": "left"},
            {"type": "crowd_movement", "zone": "right"},
        ],
    })  # fmt: skip
    cpu_before = _cpu_s()  # the broker is another process: not counted
    try:
        result = run_agent(config, AgentControl())
    finally:
        broker.stop()
    cpu = _cpu_s() - cpu_before
    # From the first frame to the last: model loading and the final drain are not throughput.
    return result.frames, result.loop_seconds, result.events, result.alerts, cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model-dir", type=Path, default=SHARED / "models")
    parser.add_argument("--video", type=Path, default=SHARED / "media" / "vtest.avi")
    args = parser.parse_args()
    manifest = model_store.load_manifest()
    model, _ = model_store.locate(manifest, args.model_dir)

    base_n, base_s = baseline(args.video, model, args.threads, 10**9)
    with tempfile.TemporaryDirectory() as tmp:
        our_n, our_s, events, alerts, cpu_s = ours(args.video, args.model_dir, args.threads, Path(tmp))
    base_fps, our_fps = base_n / base_s, our_n / our_s
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"frames: {base_n} (baseline), {our_n} (agent); threads {args.threads}")
    print(f"baseline raw interpreter : {base_fps:7.1f} frames/s")
    print(f"full agent pipeline      : {our_fps:7.1f} frames/s  ({events} events, {alerts} alerts published)")
    print(f"ratio agent/baseline = {our_fps / base_fps:.3f}   (target >= 0.90)")
    print(f"peak RSS = {peak_mb:.0f} MB   (target <= 250 MB)")
    print(f"agent CPU = {cpu_s * 1000 / max(our_n, 1):.2f} ms per frame (whole run, all threads)")


if __name__ == "__main__":
    main()
