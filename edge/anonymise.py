"""The only path from detections to the network: windowed, coarsened, suppressed, optionally noised.

Pure functions and a small accumulator; the agent publishes only what
:class:`Anonymiser` returns, as :mod:`vigie.wire` messages (whose schema is the
allow-list: a field it does not declare cannot be serialised).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edge.rules import Crossing, Firing
from vigie import wire

__all__ = ["DEFAULT_K", "AnonymisationConfig", "Anonymiser", "laplace", "publish_counts"]

# The least k the project calls safe: a count of 1 or 2 in a zone for one window can single out a
# person someone knows was there. Lower values must be written in the site file on purpose.
DEFAULT_K = 3


class AnonymisationConfig(BaseModel):
    """How counts are protected before they leave the device."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    window_s: int = Field(default=60, description=f"Aggregation window, one of {wire.WINDOW_CHOICES} s.")
    k: int = Field(
        default=DEFAULT_K,
        ge=1,
        le=99,
        description=f"Counts from 1 to k-1 are sent as '<k' (default {DEFAULT_K}; 1: off).",
    )
    epsilon: float | None = Field(
        default=None, gt=0, le=100, description="Add Laplace noise of scale 1/epsilon to counts (None: off)."
    )


def laplace(scale: float, rng: random.Random) -> float:
    """One Laplace(0, scale) sample, as the difference of two exponentials."""
    return scale * (rng.expovariate(1.0) - rng.expovariate(1.0))


def publish_counts(
    raw: Mapping[str, int],
    *,
    k: int,
    epsilon: float | None,
    rng: random.Random,
    universe: Iterable[str] = (),
) -> dict[str, int | str]:
    """Turn true counts into publishable ones.

    With noise, every class of ``universe`` gets a noisy value, seen or not:
    noising only the classes that were seen would reveal that they were.
    Counts of 0 are left out; counts from 1 to k-1 become ``"<k"``.
    """
    out: dict[str, int | str] = {}
    labels = sorted(set(raw) | (set(universe) if epsilon else set()))
    for label in labels:
        value = raw.get(label, 0)
        if epsilon:
            value = max(0, round(value + laplace(1.0 / epsilon, rng)))
        value = min(value, 10_000)
        if value <= 0:
            continue
        out[label] = f"<{k}" if value < k else value
    return out


def _spread(total: int, squares: int, frames: int) -> float:
    """Population standard deviation of a per-frame count, from its sum and sum of squares."""
    mean = total / frames
    return round(math.sqrt(max(0.0, squares / frames - mean * mean)), 2)


@dataclass(slots=True)
class _Window:
    frames: int = 0
    peak: dict[str, Counter[str]] = field(default_factory=dict)
    total: dict[str, Counter[str]] = field(default_factory=dict)
    squares: dict[str, Counter[str]] = field(default_factory=dict)  # sum of n², for the spread
    forward: dict[str, Counter[str]] = field(default_factory=dict)
    backward: dict[str, Counter[str]] = field(default_factory=dict)


class Anonymiser:
    """Accumulates per-frame zone counts and line crossings; emits wire events per window."""

    def __init__(
        self,
        *,
        site: str,
        device: str,
        zones: Sequence[str],
        lines: Sequence[str],
        classes: Sequence[str],
        model_ref: str,
        config: AnonymisationConfig,
        rng: random.Random | None = None,
        id_factory: Callable[[int], str] = wire.new_event_id,
    ) -> None:
        self.site, self.device, self.model_ref = site, device, model_ref
        self.zones, self.lines, self.classes = list(zones), list(lines), tuple(classes)
        self.config = config
        # Noise must be unpredictable in production; tests pass a seeded generator.
        self._rng = rng or random.SystemRandom()
        self._id = id_factory
        self._start: int | None = None
        self._w = _Window()

    def add(
        self, ts: float, zone_counts: Mapping[str, Mapping[str, int]], crossings: Sequence[Crossing] = ()
    ) -> list[wire.Event]:
        """Add one analysed frame; returns the events of the window it closed, if any."""
        start = wire.coarsen(ts, self.config.window_s)
        closed: list[wire.Event] = []
        if self._start is not None and start != self._start:
            closed = self.flush()
        if self._start is None:
            self._start = start
            self._w = _Window(
                peak={z: Counter() for z in self.zones},
                total={z: Counter() for z in self.zones},
                squares={z: Counter() for z in self.zones},
                forward={ln: Counter() for ln in self.lines},
                backward={ln: Counter() for ln in self.lines},
            )
        w = self._w
        w.frames += 1
        for zone, per_class in zone_counts.items():
            if zone not in w.peak:
                continue
            for label, n in per_class.items():
                w.total[zone][label] += n
                w.squares[zone][label] += n * n
                w.peak[zone][label] = max(w.peak[zone][label], n)
        for c in crossings:
            if c.line in w.forward:
                (w.forward if c.direction > 0 else w.backward)[c.line][c.label] += 1
        return closed

    def flush(self) -> list[wire.Event]:
        """Close the current window and return its events (one per zone and per line)."""
        if self._start is None or self._w.frames == 0:
            return []
        start, w, cfg = self._start, self._w, self.config
        self._start, self._w = None, _Window()
        common: dict[str, Any] = {
            "site": self.site, "device": self.device, "window_start": start, "window_s": cfg.window_s,
            "k": cfg.k, "noise_epsilon": cfg.epsilon, "model": self.model_ref,
        }  # fmt: skip
        events: list[wire.Event] = []
        for zone in self.zones:
            counts = self._publish(w.peak[zone])
            # Means are published only without noise, and only for counts published as numbers.
            means = (
                {}
                if cfg.epsilon
                else {
                    label: round(w.total[zone][label] / w.frames, 2)
                    for label, v in counts.items()
                    if isinstance(v, int)
                }
            )
            spread = {
                label: _spread(w.total[zone][label], w.squares[zone][label], w.frames) for label in means
            }
            events.append(
                wire.ZoneCountEvent(
                    id=self._id(start),
                    zone=zone,
                    frames=w.frames,
                    counts=counts,
                    mean_counts=means,
                    sd_counts=spread,
                    **common,
                )
            )
        for line in self.lines:
            events.append(
                wire.LineCountEvent(
                    id=self._id(start),
                    line=line,
                    forward=self._publish(w.forward[line]),
                    backward=self._publish(w.backward[line]),
                    **common,
                )
            )
        return events

    def _publish(self, raw: Mapping[str, int]) -> dict[str, int | str]:
        return publish_counts(
            raw, k=self.config.k, epsilon=self.config.epsilon, rng=self._rng, universe=self.classes
        )

    def alert(self, firing: Firing) -> wire.Alert:
        """A rule firing as a wire alert: time coarsened, no track, no coordinates."""
        ts = wire.coarsen(firing.ts, wire.ALERT_GRANULARITY_S)
        return wire.Alert(
            site=self.site,
            device=self.device,
            id=self._id(ts),
            rule=firing.rule,  # type: ignore[arg-type]
            zone=firing.zone,
            line=firing.line,
            ts=ts,
            value=min(max(firing.value, 0.0), 1e6) if math.isfinite(firing.value) else 1e6,
            threshold=firing.threshold,
            model=self.model_ref,
        )
