"""The per-frame stages built from one configuration: detect → track → count, rules → anonymise.

Pure of I/O: a frame goes in, the events and alerts it closes come out; the agent
(:mod:`edge.agent`) stores and sends them.
"""

from __future__ import annotations

from edge.anonymise import Anonymiser
from edge.config import AgentConfig
from edge.detectors import Detection, Detector
from edge.occupancy import occupants
from edge.rules import RuleEngine, line_crossings
from edge.sources import Frame
from edge.tracker import IouTracker
from edge.zones import count_by_zone
from vigie import wire

__all__ = ["Pipeline"]


class Pipeline:
    """The per-frame stages built from one configuration (rebuilt on reload, detector kept when it can be)."""

    def __init__(self, config: AgentConfig, detector: Detector) -> None:
        self.config = config
        self.detector = detector
        self.tracker = IouTracker()
        self.engine = RuleEngine(
            config.rules, {z.name: z for z in config.zones}, {ln.name: ln for ln in config.lines}
        )
        self.anonymiser = Anonymiser(
            site=config.site,
            device=config.device,
            zones=[z.name for z in config.zones],
            lines=[ln.name for ln in config.lines],
            classes=config.classes,
            model_ref=detector.model_ref,
            config=config.anonymisation,
        )
        self.classes = frozenset(config.classes)
        self.last_detections: list[Detection] = []

    def step(self, frame: Frame) -> tuple[list[wire.Event], list[wire.Alert]]:
        """One frame through every stage: the events of the windows it closed, the alerts it fired."""
        detections = [d for d in self.detector.detect(frame.rgb) if d.label in self.classes]
        self.last_detections = detections
        moved = self.tracker.update(frame.ts, detections)
        crossings = line_crossings(moved, self.config.lines)
        h, w = frame.rgb.shape[:2]
        firings = self.engine.update(frame.ts, self.tracker.tracks, crossings, w / h)
        # Video: the confirmed tracks present now and people back from an occlusion (edge.occupancy);
        # a photo has only its own boxes.
        tracker = self.tracker
        present = (
            detections if frame.still else occupants(tracker.tracks, frame.ts, tentative=tracker.tentative)
        )
        events = self.anonymiser.add(frame.ts, count_by_zone(present, self.config.zones), crossings)
        return events, [self.anonymiser.alert(f) for f in firings]
