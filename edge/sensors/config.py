"""Sensor plugins as configured in a site file, and the factory that builds them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.sensors import Sensor, SensorError

__all__ = [
    "PIRConfig",
    "PMS5003Config",
    "SHT31Config",
    "SensorConfig",
    "SoundDeviceConfig",
    "SoundWavConfig",
    "build_sensor",
]

_ID = r"^[a-z0-9][a-z0-9_-]{0,31}$"


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=_ID, description="Sensor name, published with its measurements.")


class SoundWavConfig(_Base):
    type: Literal["sound_wav"] = "sound_wav"
    path: Path = Field(description="WAV file (replays, tests).")
    calibration_db: float = Field(default=100.0, description="dB SPL of a full-scale RMS signal.")
    realtime: bool = True
    loop: bool = False


class SoundDeviceConfig(_Base):
    type: Literal["sound_device"] = "sound_device"
    device: str | int | None = Field(default=None, description="PortAudio device name or index.")
    samplerate: int = Field(default=48_000, ge=8000)
    calibration_db: float = Field(default=100.0, description="dB SPL of a full-scale RMS signal.")


class SHT31Config(_Base):
    type: Literal["sht31"] = "sht31"
    bus: int | Literal["simulated"] = Field(default=1, description="I2C bus number (/dev/i2c-N).")
    address: int = Field(default=0x44, ge=0x03, le=0x77)
    period_s: float = Field(default=5.0, gt=0)
    simulate_unplug_after_s: float | None = Field(default=None, description="Simulated part only.")


class PMS5003Config(_Base):
    type: Literal["pms5003"] = "pms5003"
    port: str = Field(default="/dev/serial0", description="UART device, or 'simulated'.")
    period_s: float = Field(default=5.0, gt=0)
    simulate_unplug_after_s: float | None = Field(default=None, description="Simulated part only.")


class PIRConfig(_Base):
    type: Literal["pir"] = "pir"
    pin: int | Literal["simulated"] = Field(default=17, description="GPIO (BCM) number, or 'simulated'.")
    period_s: float = Field(default=0.5, gt=0)


AnySensorConfig = SoundWavConfig | SoundDeviceConfig | SHT31Config | PMS5003Config | PIRConfig
SensorConfig = Annotated[AnySensorConfig, Field(discriminator="type")]


class _LinuxI2C:
    """/dev/i2c-N through smbus2's raw messages (imported only for real hardware)."""

    def __init__(self, bus: int) -> None:
        try:
            from smbus2 import SMBus, i2c_msg
        except ImportError:
            raise SensorError("I2C sensors need smbus2: `pip install smbus2`") from None
        self._bus: Any = SMBus(bus)
        self._msg: Any = i2c_msg

    def write_read(self, address: int, command: bytes, length: int) -> bytes:
        import time

        self._bus.i2c_rdwr(self._msg.write(address, list(command)))
        time.sleep(0.02)  # the SHT31 needs 15 ms for a high-repeatability measurement
        read = self._msg.read(address, length)
        self._bus.i2c_rdwr(read)
        return bytes(list(read))


class _TTY:
    """A UART through its device file, non-blocking (9600 8N1 set up by the provisioning role)."""

    def __init__(self, path: str) -> None:
        import os

        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        except OSError as exc:
            raise SensorError(f"cannot open {path}: {exc.strerror}") from None

    def read(self, size: int) -> bytes:
        import os

        try:
            return os.read(self._fd, size)
        except BlockingIOError:
            return b""


def build_sensor(config: AnySensorConfig) -> Sensor:
    """The plugin for one sensor entry.

    Raises:
        SensorError: when its device or library is missing, with what to install.
    """
    from edge.sensors import environment as env
    from edge.sensors.sound import SoundDeviceAudio, SoundSensor, WavAudio

    if isinstance(config, SoundWavConfig):
        audio = WavAudio(config.path, realtime=config.realtime, loop=config.loop)
        return SoundSensor(config.id, audio, calibration_db=config.calibration_db)
    if isinstance(config, SoundDeviceConfig):
        live = SoundDeviceAudio(config.device, config.samplerate)
        return SoundSensor(config.id, live, calibration_db=config.calibration_db)
    if isinstance(config, SHT31Config):
        bus: env.I2CBus = (
            env.SimulatedSHT31Bus(fail_after_s=config.simulate_unplug_after_s)
            if config.bus == "simulated"
            else _LinuxI2C(config.bus)
        )
        return env.SHT31(config.id, bus, address=config.address, period_s=config.period_s)
    if isinstance(config, PIRConfig):
        pin: env.DigitalInput = (
            env.SimulatedPIR() if config.pin == "simulated" else env.GpioZeroInput(config.pin)
        )
        return env.PIRPresence(config.id, pin, period_s=config.period_s)
    port: env.SerialPort = (
        env.SimulatedPMS5003Port(fail_after_s=config.simulate_unplug_after_s)
        if config.port == "simulated"
        else _TTY(config.port)
    )
    return env.PMS5003(config.id, port, period_s=config.period_s)
