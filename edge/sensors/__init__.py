"""Non-camera sensors beside the frame sources: sound level, environment, presence.

A sensor plugin produces :class:`Reading` objects when polled; the runner
aggregates them per window into :class:`vigie.wire.Measurement` messages that
take the same outbox and the same MQTT path as the camera events. Raw signals
(audio samples above all) never leave the plugin: the sound meter turns each
125 ms block into one A-weighted energy value and drops the samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["PLAUSIBLE", "Reading", "Sensor", "SensorError"]


class SensorError(OSError):
    """The sensor did not answer, or answered garbage (bad checksum, short frame)."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one quantity at one time (on-device only)."""

    sensor: str
    quantity: str
    value: float
    ts: float


#: Values outside these ranges flag the sensor `out_of_range` in the heartbeat.
PLAUSIBLE: dict[str, tuple[float, float]] = {
    "temperature": (-40.0, 85.0),
    "humidity": (0.0, 100.0),
    "pm1": (0.0, 1000.0),
    "pm2_5": (0.0, 1000.0),
    "pm10": (0.0, 1000.0),
    # Sound blocks carry mean-square pressure in dB(A) once calibrated.
    "sound_level": (0.0, 150.0),
    "presence": (0.0, 1.0),
}


class Sensor(Protocol):
    """What the runner needs from a plugin."""

    sensor_id: str
    period_s: float

    def read(self, now: float) -> list[Reading]:
        """Readings since the last call; raises SensorError when the device does not answer."""
        ...

    def close(self) -> None: ...
