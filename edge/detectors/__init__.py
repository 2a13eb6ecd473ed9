"""Detector runtimes behind one small protocol.

A detector turns an RGB frame into :class:`Detection` objects with boxes in
normalised coordinates. Boxes never leave the device: the zone rules turn
them into counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["Detection", "Detector"]


@dataclass(frozen=True, slots=True)
class Detection:
    """One object found in a frame (on-device only)."""

    label: str
    score: float
    # Normalised [0, 1], (ymin, xmin, ymax, xmax) as the SSD reports it.
    box: tuple[float, float, float, float]

    @property
    def foot(self) -> tuple[float, float]:
        """Bottom centre (x, y): where the object stands, used for zone membership."""
        _ymin, xmin, ymax, xmax = self.box
        return ((xmin + xmax) / 2.0, ymax)


class Detector(Protocol):
    """What every runtime offers the agent."""

    model_ref: str
    """``<model id>@<version>``, published with each event."""

    def detect(self, rgb: npt.NDArray[np.uint8]) -> list[Detection]:
        """Detect objects in an H x W x 3 RGB frame."""
        ...
