"""Response models of the API (one place per resource family)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = ["DevicePublic", "DevicesPublic", "EventPublic", "EventsPublic", "Health", "QuarantinePublic"]


class EventPublic(BaseModel):
    id: str = Field(description="Event id (UUIDv7); unique.")
    site: str
    device: str
    zone: str
    kind: str
    window_start: int = Field(description="Window start, UTC epoch seconds.")
    window_s: int
    frames: int
    counts: dict[str, int] = Field(description="Peak number of objects per class in the window.")
    mean_counts: dict[str, float]
    model: str
    received_at: float

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "id": "018bcfe5-6800-7a3c-9b1e-2f4d5c6b7a80",
                    "site": "vieux-port",
                    "device": "cam-01",
                    "zone": "quai",
                    "kind": "zone_count",
                    "window_start": 1700000040,
                    "window_s": 10,
                    "frames": 93,
                    "counts": {"person": 4, "bus": 1},
                    "mean_counts": {"person": 2.71, "bus": 0.4},
                    "model": "ssd-mobilenet-v2-coco-quant@1.0.0",
                    "received_at": 1700000051.2,
                }
            ]
        }
    }


class EventsPublic(BaseModel):
    data: list[EventPublic]
    count: int = Field(description="Number of events in this page.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


class DevicePublic(BaseModel):
    site: str
    device: str
    first_seen: float
    last_seen: float
    seconds_since_seen: float
    status: str | None = Field(description="online / offline (retained status and last will).")
    events: int = Field(description="Events received (including redeliveries).")
    quarantined: int = Field(description="Messages from this device that failed validation.")
    heartbeat: dict[str, Any] | None


class DevicesPublic(BaseModel):
    data: list[DevicePublic]
    count: int


class QuarantinePublic(BaseModel):
    data: list[dict[str, Any]]
    count: int
    total: int = Field(description="All quarantined messages ever stored.")


class Health(BaseModel):
    status: str = Field(description="`ok`, or `degraded` when the ingest is not connected.")
    version: str
    store: bool
    ingest: dict[str, Any] | None
