"""Environmental sensors: Sensirion SHT31 (temperature, humidity, I2C) and Plantower PMS5003 (PM, UART).

Each part is a pure decoder (bytes → values, with its checksum) and a small
adapter to its bus. The buses are protocols, so a simulated part (tests,
demos) plugs in where the real one would.
"""

from __future__ import annotations

import struct
import time
from typing import Protocol

from edge.sensors import Reading, SensorError

__all__ = [
    "PMS5003",
    "SHT31",
    "DigitalInput",
    "GpioZeroInput",
    "I2CBus",
    "PIRPresence",
    "SerialPort",
    "SimulatedPIR",
    "SimulatedPMS5003Port",
    "SimulatedSHT31Bus",
    "crc8_sensirion",
    "decode_pms5003",
    "decode_sht31",
]


class I2CBus(Protocol):
    def write_read(self, address: int, command: bytes, length: int) -> bytes: ...


class SerialPort(Protocol):
    def read(self, size: int) -> bytes: ...


def crc8_sensirion(data: bytes) -> int:
    """CRC-8, polynomial 0x31, init 0xFF (Sensirion's)."""
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def decode_sht31(raw: bytes) -> tuple[float, float]:
    """Six bytes (T msb, lsb, crc, RH msb, lsb, crc) → (°C, %RH).

    Raises:
        SensorError: on a short answer or a CRC mismatch.
    """
    if len(raw) != 6:
        raise SensorError(f"SHT31 answered {len(raw)} bytes, expected 6")
    for word, crc in ((raw[0:2], raw[2]), (raw[3:5], raw[5])):
        if crc8_sensirion(word) != crc:
            raise SensorError("SHT31 CRC mismatch: check the wiring and pull-ups")
    t_raw, rh_raw = (raw[0] << 8) | raw[1], (raw[3] << 8) | raw[4]
    return -45.0 + 175.0 * t_raw / 65535.0, 100.0 * rh_raw / 65535.0


class SHT31:
    """Single-shot, high repeatability measurement (command 0x2400)."""

    def __init__(self, sensor_id: str, bus: I2CBus, *, address: int = 0x44, period_s: float = 5.0) -> None:
        self.sensor_id, self.bus, self.address, self.period_s = sensor_id, bus, address, period_s

    def read(self, now: float) -> list[Reading]:
        try:
            raw = self.bus.write_read(self.address, b"\x24\x00", 6)
        except OSError as exc:
            raise SensorError(f"SHT31 at 0x{self.address:02x} does not answer: {exc}") from None
        t, rh = decode_sht31(raw)
        return [Reading(self.sensor_id, "temperature", t, now), Reading(self.sensor_id, "humidity", rh, now)]

    def close(self) -> None:
        """The bus belongs to the runner."""


_PMS_HEADER = b"\x42\x4d"


def decode_pms5003(frame: bytes) -> dict[str, float]:
    """One 32-byte frame → PM1, PM2.5, PM10 in µg/m³ (atmospheric environment values).

    Raises:
        SensorError: on a bad header, length or checksum.
    """
    if len(frame) != 32 or frame[:2] != _PMS_HEADER:
        raise SensorError("PMS5003 frame must be 32 bytes starting 0x42 0x4d")
    if struct.unpack(">H", frame[2:4])[0] != 28:
        raise SensorError("PMS5003 frame length field is not 28")
    if sum(frame[:30]) & 0xFFFF != struct.unpack(">H", frame[30:32])[0]:
        raise SensorError("PMS5003 checksum mismatch")
    fields = struct.unpack(">13H", frame[4:30])
    return {"pm1": float(fields[3]), "pm2_5": float(fields[4]), "pm10": float(fields[5])}


class PMS5003:
    """Active mode: the part streams a frame every second; we read the newest complete one."""

    def __init__(self, sensor_id: str, port: SerialPort, *, period_s: float = 5.0) -> None:
        self.sensor_id, self.port, self.period_s = sensor_id, port, period_s
        self._buffer = b""

    def read(self, now: float) -> list[Reading]:
        try:
            self._buffer = (self._buffer + self.port.read(256))[-512:]
        except OSError as exc:
            raise SensorError(f"PMS5003 port does not answer: {exc}") from None
        start = self._buffer.rfind(_PMS_HEADER, 0, max(0, len(self._buffer) - 30))  # a whole frame after it
        if start < 0:
            raise SensorError("PMS5003 sent no complete frame")
        values = decode_pms5003(self._buffer[start : start + 32])
        self._buffer = self._buffer[start + 32 :]
        return [Reading(self.sensor_id, q, v, now) for q, v in values.items()]

    def close(self) -> None:
        """The port belongs to the runner."""


class DigitalInput(Protocol):
    def is_active(self) -> bool: ...


class PIRPresence:
    """A passive-infrared presence detector on a GPIO input: 1 while someone moves in front of it."""

    def __init__(self, sensor_id: str, pin: DigitalInput, *, period_s: float = 0.5) -> None:
        self.sensor_id, self.pin, self.period_s = sensor_id, pin, period_s

    def read(self, now: float) -> list[Reading]:
        try:
            active = self.pin.is_active()
        except OSError as exc:
            raise SensorError(f"PIR input does not answer: {exc}") from None
        return [Reading(self.sensor_id, "presence", 1.0 if active else 0.0, now)]

    def close(self) -> None:
        """The pin belongs to the runner."""


class GpioZeroInput:
    """A GPIO pin through gpiozero (Raspberry Pi OS ships it), imported only when used."""

    def __init__(self, pin: int) -> None:
        try:
            from gpiozero import MotionSensor
        except ImportError:
            raise SensorError("PIR sensors need gpiozero: `sudo apt install python3-gpiozero`") from None
        self._sensor = MotionSensor(pin)

    def is_active(self) -> bool:
        return bool(self._sensor.motion_detected)


class SimulatedPIR:
    """Presence for ``on_s`` seconds out of every ``cycle_s`` (from ``start``), like people passing by."""

    def __init__(self, *, cycle_s: float = 10.0, on_s: float = 3.0, start: float | None = None) -> None:
        self.cycle_s, self.on_s = cycle_s, on_s
        self.start = time.time() if start is None else start
        self.now: float | None = None  # tests set the time; else the wall clock

    def is_active(self) -> bool:
        t = (self.now if self.now is not None else time.time()) - self.start
        return (t % self.cycle_s) < self.on_s


class SimulatedSHT31Bus:
    """An SHT31 on a simulated I2C bus: plausible values, real encoding and CRCs; can be unplugged."""

    def __init__(
        self, *, fail_after_s: float | None = None, temperature: float = 18.5, humidity: float = 62.0
    ):
        self.temperature, self.humidity = temperature, humidity
        self._deadline = time.monotonic() + fail_after_s if fail_after_s is not None else None

    def write_read(self, address: int, command: bytes, length: int) -> bytes:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise OSError(121, "Remote I/O error")  # what Linux says for an absent I2C device
        t = round((self.temperature + 45.0) / 175.0 * 65535.0)
        rh = round(self.humidity / 100.0 * 65535.0)
        tb, rb = struct.pack(">H", t), struct.pack(">H", rh)
        return tb + bytes([crc8_sensirion(tb)]) + rb + bytes([crc8_sensirion(rb)])


class SimulatedPMS5003Port:
    """A PMS5003 streaming valid frames on a simulated serial port; can be unplugged."""

    def __init__(self, *, fail_after_s: float | None = None, pm2_5: int = 12) -> None:
        self.pm2_5 = pm2_5
        self._deadline = time.monotonic() + fail_after_s if fail_after_s is not None else None

    def read(self, size: int) -> bytes:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return b""  # an unplugged UART just goes quiet
        fields = [self.pm2_5 - 4, self.pm2_5, self.pm2_5 + 6] * 2 + [0] * 6 + [0x97]
        body = _PMS_HEADER + struct.pack(">H", 28) + struct.pack(">13H", *fields)
        return body + struct.pack(">H", sum(body) & 0xFFFF)
