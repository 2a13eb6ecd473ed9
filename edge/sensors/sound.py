"""A-weighted sound level on the device: L_Aeq, L_Amax and L_A90 per window, no audio kept or sent.

Audio is read in 125 ms blocks ("fast" time weighting); each block becomes one
A-weighted mean-square value (IEC 61672 A-curve applied in the frequency
domain, Hann-windowed) and the samples are dropped at once. Frequency-domain
weighting of 125 ms blocks is exact for steady sounds (tested within 0.5 dB
from 125 Hz to 4 kHz) and approximate for very short transients, where a
class-1 meter's time-domain filter would differ slightly. ``calibration_db`` is the sound
pressure level, in dB, of a digital signal whose RMS is full scale (1.0); set
it with a calibrator (94 dB SPL at 1 kHz) per microphone.
"""

from __future__ import annotations

import math
import time
import wave
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.sensors import Reading, SensorError

__all__ = [
    "BLOCK_S",
    "SoundDeviceAudio",
    "SoundSensor",
    "WavAudio",
    "a_weighting_db",
    "block_levels",
    "window_stats",
]

BLOCK_S = 0.125


def a_weighting_db(freqs: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    """The A-curve in dB at the given frequencies (0 dB at 1 kHz)."""
    f2 = np.square(np.maximum(freqs, 1e-6))
    ra = (12194.0**2 * f2**2) / (
        (f2 + 20.6**2) * np.sqrt((f2 + 107.7**2) * (f2 + 737.9**2)) * (f2 + 12194.0**2)
    )
    return np.asarray(20.0 * np.log10(ra) + 2.0, dtype=np.float64)


def block_levels(samples: npt.NDArray[np.float32], rate: int, calibration_db: float) -> list[float]:
    """A-weighted level (dB) of each 125 ms block of ``samples`` (floats in [-1, 1])."""
    n = int(rate * BLOCK_S)
    if n <= 0 or len(samples) < n:
        return []
    blocks = samples[: len(samples) // n * n].reshape(-1, n).astype(np.float64)
    # A Hann window keeps a tone's energy within ±2 bins: with a rectangular block, leakage
    # carries low tones' energy to bins the A-curve favours (+0.8 dB at 125 Hz). Dividing by
    # the window's mean square restores the energy of a steady signal.
    window = np.hanning(n)
    spectrum = np.fft.rfft(blocks * window, axis=1) / math.sqrt(float(np.mean(window**2)))
    weights = 10.0 ** (a_weighting_db(np.fft.rfftfreq(n, 1.0 / rate)) / 10.0)  # power weights
    scale = np.full(spectrum.shape[1], 2.0)
    scale[0] = 1.0
    if n % 2 == 0:
        scale[-1] = 1.0
    mean_square = (np.abs(spectrum) ** 2 * weights * scale).sum(axis=1) / (n * n)  # Parseval
    return [10.0 * math.log10(max(ms, 1e-20)) + calibration_db for ms in mean_square]


def window_stats(levels: list[float], impulses: int) -> dict[str, float]:
    """L_Aeq (energy mean), L_Amax (loudest block), L_A90 (exceeded 90 % of the time)."""
    energy = sum(10.0 ** (lv / 10.0) for lv in levels) / len(levels)
    return {
        "laeq": round(10.0 * math.log10(energy), 2),
        "lamax": round(max(levels), 2),
        "la90": round(float(np.percentile(levels, 10)), 2),
        "impulses": float(impulses),
    }


class WavAudio:
    """Audio from a WAV file (tests, replays), mono or the first channel, 8/16/32-bit PCM."""

    def __init__(self, path: Path, *, realtime: bool = False, loop: bool = False) -> None:
        try:
            self._wav = wave.open(str(path), "rb")  # noqa: SIM115 (closed in close())
        except (OSError, wave.Error) as exc:
            raise SensorError(f"cannot read {path} as WAV: {exc}") from None
        self.rate = self._wav.getframerate()
        self._channels = self._wav.getnchannels()
        self._width = self._wav.getsampwidth()
        self.realtime, self.loop = realtime, loop
        self._started = time.monotonic()
        self._frames_read = 0

    def chunks(self) -> Iterator[npt.NDArray[np.float32]]:
        """Samples available now (all of them unless ``realtime``)."""
        if self.realtime:
            due = int((time.monotonic() - self._started) * self.rate) - self._frames_read
        else:
            due = self._wav.getnframes()
        while due > 0:
            raw = self._wav.readframes(min(due, self.rate))
            if not raw:
                if not self.loop:
                    return
                self._wav.rewind()
                continue
            count = len(raw) // (self._width * self._channels)
            self._frames_read += count
            due -= count
            dtype = {1: np.uint8, 2: np.int16, 4: np.int32}[self._width]
            data = np.frombuffer(raw, dtype=dtype).reshape(-1, self._channels)[:, 0].astype(np.float32)
            full_scale = float(2 ** (8 * self._width - 1))
            yield (data - 128.0) / 128.0 if self._width == 1 else data / full_scale

    def close(self) -> None:
        self._wav.close()


class SoundDeviceAudio:
    """A live microphone through PortAudio (`sounddevice`), imported only when used."""

    def __init__(self, device: str | int | None, rate: int) -> None:
        try:
            import sounddevice
        except (ImportError, OSError):
            raise SensorError(
                "live microphones need the sounddevice package and PortAudio: "
                "`sudo apt install libportaudio2 && pip install sounddevice`"
            ) from None
        self.rate = rate
        self._buffer: deque[npt.NDArray[np.float32]] = deque(maxlen=64)
        self._stream: Any = sounddevice.InputStream(
            device=device, channels=1, samplerate=rate, dtype="float32",
            callback=lambda data, frames, t, status: self._buffer.append(data[:, 0].copy()),
        )  # fmt: skip
        self._stream.start()

    def chunks(self) -> Iterator[npt.NDArray[np.float32]]:
        while self._buffer:
            yield self._buffer.popleft()

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()


class SoundSensor:
    """Turns audio into 125 ms A-weighted levels, at once, and forgets the audio."""

    def __init__(
        self,
        sensor_id: str,
        audio: WavAudio | SoundDeviceAudio,
        *,
        calibration_db: float,
        start_ts: float | None = None,
    ) -> None:
        self.sensor_id = sensor_id
        self.period_s = 0.5
        self.audio = audio
        self.calibration_db = calibration_db
        self._rest = np.zeros(0, dtype=np.float32)
        self._t = time.time() if start_ts is None else start_ts  # the time of the next block

    def read(self, now: float) -> list[Reading]:
        readings: list[Reading] = []
        n = int(self.audio.rate * BLOCK_S)
        for chunk in self.audio.chunks():
            samples = np.concatenate([self._rest, chunk]) if len(self._rest) else chunk
            used = len(samples) // n * n
            for level in block_levels(samples[:used], self.audio.rate, self.calibration_db):
                readings.append(Reading(self.sensor_id, "sound_level", level, self._t))
                self._t += BLOCK_S
            self._rest = samples[used:].copy()
            del samples, chunk  # the audio goes no further than this function
        # Replays faster than real time keep their own clock; a live microphone follows the wall clock.
        self._t = max(self._t, now - 1.0) if isinstance(self.audio, SoundDeviceAudio) else self._t
        return readings

    def close(self) -> None:
        self.audio.close()
