"""Camera rows of the cube against the roll-ups: one rule for both (issue 16, closing an open risk).

One camera, alone in its H3 cell, counts people in four one-minute windows of one hour:
6, 7, 3 and 8 (the device's k is 3, the hub's 5). Analysts read the windows (the 3
served as ``"<5"``) and the hour's roll-up (its total hidden: a window is under k, but
``n``, how many windows, is served). The hub's fusion job folds the roll-ups into the
cube (source ``camera``: the mean of the windows' peaks over the hour), and the cube
protects that series as any other. Before ``hub/fusion/cameras.py`` applied the roll-ups'
floor, the cube served the hour's mean (6.0): times the 4 windows, 24, minus the served
6, 7 and 8, the attacker pinned the floored window at 3 (shown once, while writing this
test). Now a roll-up whose total analysts may not read never reaches the cube.
"""

from __future__ import annotations

from pathlib import Path

from hub.fusion.cameras import fold_cameras, save_locations
from hub.fusion.zones import ZoneIndex
from tests.attacker import Knowledge, camera_cube_facts, event_facts, rollup_facts
from tests.test_disclosure_attack import LEVELS, Hub, K, plant_of

WHERE = (43.2951, 5.3745)  # the Vieux-Port, Marseille


def test_the_cube_camera_hour_does_not_give_a_floored_window_back(tmp_path: Path) -> None:
    plant = plant_of([], [], [6, 7, 3, 8])
    device = f"{plant.events[0].site}/{plant.events[0].device}"
    zones = ZoneIndex(8)
    with Hub(tmp_path, plant) as (client, planted):
        store = client.app.state.store  # type: ignore[attr-defined]
        save_locations(store, {device: WHERE})
        assert fold_cameras(store, zones, k=K)[0] >= 1  # the hour went through the fold
        know = Knowledge()
        for key in planted.truth():
            know.unknown(key)
        events = client.get("/v1/events", params={"limit": 1000}).json()["data"]
        event_facts(know, events, "events")
        windows = {("event", e["id"], label): (e["site"], e["device"], e["zone"], e["window_start"])
                   for e in events for label in e["counts"]}  # fmt: skip
        rollups = client.get("/v1/rollups", params={"limit": 10_000}).json()["data"]
        rollup_facts(know, rollups, windows, "rollups")
        assert any(r["metric"] == "peak:person" and r["n"] == 4 for r in rollups)  # n is served
        for level in LEVELS:
            rows = client.get("/v1/cube", params={"bucket": level, "source": "camera"}).json()["data"]
            camera_cube_facts(know, rows, rollups, windows, {device: zones.keys(*WHERE)})
    truth = planted.truth()
    small = [key for key, v in truth.items() if 1 <= v < K]
    assert len(small) == 1  # the window of 3
    lo, hi = know.interval(small[0])
    assert (lo, hi) != (3, 3), "the cube's camera hour gave the floored window back"
    assert len(range(max(lo, 1), min(hi, K - 1) + 1)) > 1, (lo, hi)
