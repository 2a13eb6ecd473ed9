"""The agent's configuration: one pydantic model, every field described."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.zones import FULL_FRAME, Zone
from vigie.mqtt import BrokerConfig
from vigie.wire import WINDOW_CHOICES

__all__ = ["DEFAULT_CLASSES", "AgentConfig"]

#: What a street camera counts by default: people and vehicles, nothing else.
DEFAULT_CLASSES = ("person", "bicycle", "car", "motorcycle", "bus", "truck")


class AgentConfig(BaseModel):
    """Everything one agent process needs; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    site: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,47}$", description="Site slug, e.g. `vieux-port`.")
    device: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,47}$", description="This device's slug.")
    source: str = Field(description="Video file, image file or folder of images.")
    loop: bool = Field(default=False, description="Replay the source forever.")
    realtime: bool = Field(default=False, description="Pace a video at its own frame rate.")
    fps_cap: float | None = Field(
        default=None, gt=0, description="Analyse at most this many frames a second."
    )
    model: str = Field(default="ssd_mobilenet_v2_coco_quant", description="Model folder under models/.")
    model_dir: Path | None = Field(default=None, description="Folder holding the model files.")
    threads: int = Field(default=2, ge=1, le=16, description="Detector threads.")
    classes: tuple[str, ...] = Field(default=DEFAULT_CLASSES, description="Classes to count.")
    zones: tuple[Zone, ...] = Field(default=(FULL_FRAME,), description="Zones to count in.")
    window_s: int = Field(default=10, description=f"Aggregation window, one of {WINDOW_CHOICES} s.")
    heartbeat_s: float = Field(default=10.0, gt=0, description="Seconds between heartbeats.")
    outbox: Path = Field(default=Path("vigie-outbox.sqlite"), description="Durable outbox file.")
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    drain_timeout_s: float = Field(
        default=30.0, ge=0, description="At the end of a finite source, wait this long for the broker."
    )

    @model_validator(mode="after")
    def _check(self) -> AgentConfig:
        if self.window_s not in WINDOW_CHOICES:
            raise ValueError(f"window_s={self.window_s} must be one of {WINDOW_CHOICES}")
        names = [z.name for z in self.zones]
        if len(set(names)) != len(names):
            raise ValueError(f"zone names must be unique, got {names}")
        return self
