"""A city's event mix, generated (``bench/event_store.py`` and the storage tests use it).

1,600 cameras with two zones each send a zone count every 10 s; one camera in eight also counts a line
every 60 s; one device in twenty carries a sound sensor (60-s windows); a few alerts. Counts follow a
daily rhythm with noise, suppressed under k as an agent would send them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

from vigie import wire

__all__ = ["CAMERAS", "city_hour", "city_windows"]

CAMERAS = 1600
K = 3
MODEL = "ssd-mobilenet-v2-coco-quant@1.0.0"


def _counts(
    rng: random.Random, level: float
) -> tuple[dict[str, int | str], dict[str, float], dict[str, float]]:
    counts: dict[str, int | str] = {}
    mean: dict[str, float] = {}
    sd: dict[str, float] = {}
    for label, scale in (("person", 6.0), ("car", 3.0), ("bicycle", 0.6)):
        peak = max(0, round(rng.gauss(level * scale, 1.5)))
        if peak == 0:
            continue
        if peak < K:
            counts[label] = f"<{K}"
            continue
        counts[label] = peak
        mean[label] = round(peak * rng.uniform(0.4, 0.9), 2)
        sd[label] = round(rng.uniform(0.1, 1.5), 2)
    return counts, mean, sd


def _level(ts: int) -> float:
    """A daily rhythm: quiet at night, busy in the afternoon."""
    return 0.3 + 0.7 * max(0.0, math.sin((ts % 86_400) / 86_400 * 2 * math.pi - math.pi / 2) + 0.4)


def city_windows(start: int, seconds: int, *, cameras: int = CAMERAS, seed: int = 1) -> Iterator[wire.Event]:
    """Every event of the city from ``start`` for ``seconds``, time-major (as a live hub receives them)."""
    rng = random.Random(seed)
    for ws in range(start - start % 10, start + seconds, 10):
        yield from _window(rng, ws, cameras)


def city_hour(hour: int, *, cameras: int = CAMERAS, seed: int = 1) -> Iterator[wire.Event]:
    """One hour of the city, device-major (as a bulk load packs it)."""
    rng = random.Random(seed + hour)
    for cam in range(cameras):
        for ws in range(hour, hour + 3600, 10):
            yield from _device_window(rng, ws, cam)


def _window(rng: random.Random, ws: int, cameras: int) -> Iterator[wire.Event]:
    for cam in range(cameras):
        yield from _device_window(rng, ws, cam)


def _device_window(rng: random.Random, ws: int, cam: int) -> Iterator[wire.Event]:
    device = f"cam-{cam:04d}"
    site = f"district-{cam % 16:02d}"
    level = _level(ws)
    for zone in ("north", "south"):
        counts, mean, sd = _counts(rng, level)
        yield wire.ZoneCountEvent(
            site=site, device=device, zone=zone, id=wire.new_event_id(ws), window_start=ws, window_s=10,
            frames=rng.choice((48, 49, 50)), counts=counts, mean_counts=mean, sd_counts=sd, model=MODEL, k=K,
        )  # fmt: skip
    if ws % 60 == 0 and cam % 8 == 0:
        fwd, _, _ = _counts(rng, level * 4)
        back, _, _ = _counts(rng, level * 4)
        yield wire.LineCountEvent(
            site=site, device=device, line="gate", id=wire.new_event_id(ws), window_start=ws, window_s=60,
            forward=fwd, backward=back, model=MODEL, k=K,
        )  # fmt: skip
    if ws % 60 == 0 and cam % 20 == 0:
        laeq = round(rng.uniform(45, 75), 1)
        yield wire.Measurement(
            site=site, device=device, sensor="mic", quantity="sound_level", unit="dB(A)",
            id=wire.new_event_id(ws), window_start=ws, window_s=60, samples=600,
            stats={"laeq": laeq, "lamax": round(laeq + rng.uniform(3, 15), 1), "la90": round(laeq - 5, 1)},
        )  # fmt: skip
    if rng.random() < 0.0005:
        yield wire.Alert(
            site=site, device=device, id=wire.new_event_id(ws), rule="crowd_density", zone="north", ts=ws,
            value=round(rng.uniform(4, 9), 2), threshold=4.0, model=MODEL,
        )  # fmt: skip
