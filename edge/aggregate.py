"""Per-zone counts over a time window, turned into wire events (pure, no I/O).

This is the anonymisation boundary for detections: what comes in is
per-frame counts (already stripped of boxes by :mod:`edge.zones`); what
goes out is one :class:`~vigie.wire.ZoneCountEvent` per zone and window,
with the time coarsened to the window start.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from vigie.wire import ZoneCountEvent, coarsen, new_event_id

__all__ = ["WindowAggregator"]


@dataclass(slots=True)
class _ZoneWindow:
    peak: Counter[str] = field(default_factory=Counter)
    total: Counter[str] = field(default_factory=Counter)


class WindowAggregator:
    """Accumulates per-frame zone counts and emits events when a window closes."""

    def __init__(
        self,
        *,
        site: str,
        device: str,
        zones: Sequence[str],
        window_s: int,
        model_ref: str,
        id_factory: Callable[[int], str] = new_event_id,
    ) -> None:
        self.site = site
        self.device = device
        self.zones = list(zones)
        self.window_s = window_s
        self.model_ref = model_ref
        self._id_factory = id_factory
        self._start: int | None = None
        self._frames = 0
        self._zones: dict[str, _ZoneWindow] = {}

    def add(self, ts: float, counts: Mapping[str, Mapping[str, int]]) -> list[ZoneCountEvent]:
        """Add one analysed frame; returns the events of the window it closed, if any."""
        start = coarsen(ts, self.window_s)
        closed: list[ZoneCountEvent] = []
        if self._start is not None and start != self._start:
            closed = self.flush()
        if self._start is None:
            self._start = start
            self._zones = {z: _ZoneWindow() for z in self.zones}
        self._frames += 1
        for zone, per_class in counts.items():
            acc = self._zones.get(zone)
            if acc is None:
                continue
            for label, n in per_class.items():
                acc.total[label] += n
                if n > acc.peak[label]:
                    acc.peak[label] = n
        return closed

    def flush(self) -> list[ZoneCountEvent]:
        """Close the current window (end of source, shutdown) and return its events."""
        if self._start is None or self._frames == 0:
            return []
        frames, start = self._frames, self._start
        events = [
            ZoneCountEvent(
                site=self.site,
                device=self.device,
                zone=zone,
                id=self._id_factory(start),
                window_start=start,
                window_s=self.window_s,
                frames=frames,
                counts={k: v for k, v in sorted(acc.peak.items()) if v > 0},
                mean_counts={k: round(acc.total[k] / frames, 2) for k in sorted(acc.peak) if acc.peak[k] > 0},
                model=self.model_ref,
            )
            for zone, acc in self._zones.items()
        ]
        self._start, self._frames, self._zones = None, 0, {}
        return events
