"""Replay the agent's tracker and occupant count on cached detector outputs (docs/models.md, issue 18).

The detector is the costly part (3x3 tiles: 10 passes a frame), and a tracker
or counting change needs every setting re-measured. So the agent's detector
(`build_detector`, as `vigie model evaluate` builds it) runs once per setting
and its person boxes are cached; then each setting is replayed through
`edge.tracker` and `edge.occupancy` as they are now, with and without the
count of people back from an occlusion (`occupants(..., tentative=...)`):

* on the development set (tiles 1/2/3 x person threshold 0.4/0.5/0.6 x
  stretch/letterbox, the 1.5 s of frames at 5 fps before each labelled frame):
  MAE and bias per setting;
* with ``--video-settings``, over the whole video at 5 fps with one tracker
  running all along (no labels): on how many frames the count changes, the
  mean count against the raw boxes, and the tracks born and confirmed.

    python bench/tracker_replay.py --cache /tmp/replay --video-settings 1,0.5,off 3,0.5,off
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable
from pathlib import Path

from edge.config import AgentConfig
from edge.detectors import Detection
from edge.detectors.factory import build_detector
from edge.evaluate import agent_horizon, load_labels, read_frames
from edge.occupancy import occupants
from edge.tracker import IouTracker

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
Boxes = dict[int, list[Detection]]
Setting = tuple[int, float, bool]  # tiles, person threshold, letterbox
Count = Callable[[IouTracker, float], int]


def _cached(cache: Path, name: str, setting: Setting, video: Path, indices: list[int]) -> Boxes:
    tiles, threshold, letterbox = setting
    path = cache / f"{name}_{tiles}_{threshold}_{int(letterbox)}.json"
    if path.exists():
        stored = json.loads(path.read_text())
        return {int(i): [Detection(d[0], d[1], tuple(d[2])) for d in found] for i, found in stored.items()}
    frames = read_frames(video, indices)
    base = AgentConfig(
        site="replay", device="replay", source=str(video), model_dir=SHARED / "models", threads=2
    )
    detector = build_detector(
        base.model_copy(update={"tiles": tiles, "thresholds": {"person": threshold}, "letterbox": letterbox})
    )
    boxes = {i: [d for d in detector.detect(frames[i]) if d.label == "person"] for i in indices}
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({i: [[d.label, d.score, list(d.box)] for d in found] for i, found in boxes.items()})
    )
    return boxes


def _confirmed_only(tracker: IouTracker, ts: float) -> int:
    return len(occupants(tracker.tracks, ts))


def _agent(tracker: IouTracker, ts: float) -> int:
    return len(occupants(tracker.tracks, ts, tentative=tracker.tentative))


def _label(setting: Setting) -> str:
    return f"tiles={setting[0]} threshold={setting[1]} letterbox={'on' if setting[2] else 'off'}"


def development_set(cache: Path, video: Path, labels_path: Path) -> None:
    labels = load_labels(labels_path)
    horizon = agent_horizon(10.0, 5.0)
    indices = sorted({i for lab in labels for i in horizon.indices(lab.index)})
    print(f"{'setting':<40} {'confirmed only':>16} {'agent':>16}   (MAE, bias; {len(labels)} frames)")
    for setting in itertools.product((1, 2, 3), (0.4, 0.5, 0.6), (False, True)):
        boxes = _cached(cache, "labelled", setting, video, indices)
        cells = []
        for count in (_confirmed_only, _agent):
            errors = []
            for lab in labels:
                tracker, ts = IouTracker(), 0.0
                for i in horizon.indices(lab.index):
                    ts = i * horizon.frame_period_s / horizon.stride
                    tracker.update(ts, boxes[i])
                errors.append(count(tracker, ts) - lab.count)
            mae = sum(abs(e) for e in errors) / len(errors)
            cells.append(f"{mae:.2f} ({sum(errors) / len(errors):+.2f})")
        print(f"{_label(setting):<40} {cells[0]:>16} {cells[1]:>16}")


def whole_video(cache: Path, video: Path, settings: list[Setting], frames: int = 795) -> None:
    indices = list(range(0, frames, 2))  # 10 fps footage at the agent's 5 fps
    for setting in settings:
        boxes = _cached(cache, "video", setting, video, indices)
        tracker = IouTracker()
        counts: dict[str, list[int]] = {"confirmed": [], "agent": [], "raw": []}
        born, confirmed = 0, set[int]()
        for i in indices:
            ts = i / 10.0
            tracker.update(ts, boxes[i])
            born += sum(1 for t in tracker.tentative if t.first_ts >= ts)
            confirmed |= {t.id for t in tracker.tracks}
            counts["confirmed"].append(_confirmed_only(tracker, ts))
            counts["agent"].append(_agent(tracker, ts))
            counts["raw"].append(len(boxes[i]))
        changed = [i for i, a, b in zip(indices, counts["confirmed"], counts["agent"], strict=True) if a != b]
        means = {k: sum(v) / len(v) for k, v in counts.items()}
        print(
            f"{_label(setting)}: {len(indices)} frames; people back from an occlusion change the count on "
            f"{len(changed)} ({changed}); mean count {means['confirmed']:.2f} -> {means['agent']:.2f} "
            f"(raw boxes {means['raw']:.2f}); tracks born {born}, confirmed {len(confirmed)}"
        )


def _setting(text: str) -> Setting:
    tiles, threshold, letterbox = text.split(",")
    return int(tiles), float(threshold), letterbox == "on"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cache", type=Path, required=True, help="Folder for the detector outputs (reused).")
    parser.add_argument("--video", type=Path, default=SHARED / "media" / "vtest.avi")
    parser.add_argument("--labels", type=Path, default=SHARED / "data" / "labels" / "vtest_people.csv")
    parser.add_argument("--video-settings", nargs="*", type=_setting, default=[], help="e.g. 3,0.5,off")
    args = parser.parse_args()
    development_set(args.cache, args.video, args.labels)
    whole_video(args.cache, args.video, args.video_settings)


if __name__ == "__main__":
    main()
