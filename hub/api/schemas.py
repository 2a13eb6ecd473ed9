"""Response models of the API (one place per resource family)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

NEXT = "This request with the next page's cursor (path and query); null on the last page."
NEXT_CURSOR = "Pass as `cursor` for the next page; null on the last."

__all__ = [
    "NEXT",
    "NEXT_CURSOR",
    "DevicePublic",
    "DevicesPublic",
    "EventPublic",
    "EventsPublic",
    "Health",
    "HeartbeatPublic",
    "QuarantinePublic",
]


class EventPublic(BaseModel):
    """One event as the device sent it (see docs/protocol.md), plus when the hub received it.

    Fields beyond the common ones depend on ``kind``: ``zone_count`` has zone, frames,
    counts (the window's peak), mean_counts (occupancy) and, from version 2, sd_counts;
    ``line_count`` has line, forward and backward; ``alert``
    has rule, zone or line, ts, value and threshold.
    """

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "v": 2, "kind": "zone_count", "id": "018bcfe5-6800-7a3c-9b1e-2f4d5c6b7a80",
                    "site": "vieux-port", "device": "cam-01", "zone": "quai", "window_start": 1700000040,
                    "window_s": 60, "frames": 293, "counts": {"person": 4, "bicycle": "<3"},
                    "mean_counts": {"person": 2.71}, "sd_counts": {"person": 0.84}, "k": 3,
                    "noise_epsilon": None, "model": "ssd-mobilenet-v2-coco-quant@1.0.0",
                    "received_at": 1700000101.2,
                }
            ]
        },
    )  # fmt: skip
    v: int
    kind: str = Field(description="zone_count, line_count, alert or measurement.")
    id: str = Field(description="Event id (UUIDv7); unique.")
    site: str
    device: str
    model: str | None = Field(default=None, description="Detector model, for camera events.")
    received_at: float


class EventsPublic(BaseModel):
    data: list[EventPublic]
    count: int = Field(description="Number of events in this page.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")
    next: str | None = Field(default=None, description=NEXT)


class HeartbeatPublic(BaseModel):
    """A device's last heartbeat as sent (``vigie.wire.Heartbeat``); fields older agents lack are null."""

    model_config = ConfigDict(extra="allow")
    ts: float | None = Field(default=None, description="When it was sent (UTC epoch s, coarsened).")
    agent_version: str | None = None
    model: str | None = Field(default=None, description="`<model id>@<version>` running.")
    uptime_s: float | None = None
    fps: float | None = Field(default=None, description="Frames analysed per second.")
    inference_p50_ms: float | None = None
    inference_p95_ms: float | None = None
    cpu_percent: float | None = None
    rss_mb: float | None = None
    disk_free_mb: float | None = None
    cpu_temp_c: float | None = Field(default=None, description="SoC temperature, °C.")
    outbox_depth: int | None = Field(
        default=None, description="Messages waiting on the device for the broker."
    )
    outbox_dropped: int | None = Field(default=None, description="Messages dropped to keep the disk quota.")
    sensors: dict[str, Any] | None = None
    problems: dict[str, Any] | None = None


class DevicePublic(BaseModel):
    site: str
    device: str
    first_seen: float
    last_seen: float
    seconds_since_seen: float
    status: str | None = Field(description="online / offline (retained status and last will).")
    events: int = Field(description="Events received (including redeliveries).")
    quarantined: int = Field(description="Messages from this device that failed validation.")
    heartbeat: HeartbeatPublic | None


class DevicesPublic(BaseModel):
    data: list[DevicePublic]
    count: int = Field(description="Devices in this page.")
    next_cursor: str | None = Field(default=None, description=NEXT_CURSOR)
    next: str | None = Field(default=None, description=NEXT)


class QuarantinePublic(BaseModel):
    data: list[dict[str, Any]]
    count: int = Field(description="Messages in this page.")
    total: int = Field(description="All quarantined messages ever stored.")
    next_cursor: str | None = Field(default=None, description=NEXT_CURSOR)
    next: str | None = Field(default=None, description=NEXT)


class Health(BaseModel):
    status: str = Field(description="`ok`, or `degraded` when the ingest is not connected.")
    version: str
    store: bool
    ingest: dict[str, Any] | None
