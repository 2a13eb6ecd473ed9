"""Sound level from real WAV recordings (sox tones, espeak-ng speech) and the environmental parts."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import msgpack
import numpy as np
import pytest

from edge.sensors import SensorError
from edge.sensors.environment import (
    PMS5003,
    SHT31,
    SimulatedPMS5003Port,
    SimulatedSHT31Bus,
    crc8_sensirion,
    decode_pms5003,
    decode_sht31,
)
from edge.sensors.runner import MeasurementAggregator, SensorRunner
from edge.sensors.sound import SoundSensor, WavAudio, a_weighting_db
from tests.conftest import need_service
from vigie import wire

CAL = 100.0  # dB SPL of a full-scale RMS signal


def sox(tmp: Path, name: str, *effects: str, seconds: float = 10.0) -> Path:
    need_service(shutil.which("sox") is not None, "sox (apt-get install sox)")
    path = tmp / name
    subprocess.run(["sox", "-n", "-r", "48000", "-b", "16", "-c", "1", str(path), "synth", str(seconds),
                    *effects], check=True)  # fmt: skip
    return path


def measure(path: Path, window_s: int = 10) -> list[wire.Measurement]:
    sensor = SoundSensor("mic", WavAudio(path, realtime=False), calibration_db=CAL, start_ts=1_700_000_400.0)
    agg = MeasurementAggregator(site="s", device="d", window_s=window_s)
    agg.add(sensor.read(0.0))
    return agg.close_before(math.inf)


def expected_db(amplitude: float, freq: float) -> float:
    rms = amplitude / math.sqrt(2)
    return 20 * math.log10(rms) + CAL + float(a_weighting_db(np.array([freq]))[0])


def test_a_curve_reference_points() -> None:
    got = a_weighting_db(np.array([100.0, 1000.0, 4000.0]))
    assert got == pytest.approx([-19.1, 0.0, 1.0], abs=0.1)  # IEC 61672 table values


@pytest.mark.parametrize(("freq", "amplitude"), [(1000, 0.1), (1000, 0.5), (125, 0.3), (4000, 0.05)])
def test_laeq_of_calibrated_tones_within_half_a_db(tmp_path: Path, freq: int, amplitude: float) -> None:
    path = sox(tmp_path, f"tone{freq}.wav", "sine", str(freq), "vol", str(amplitude), seconds=10.0)
    (m,) = measure(path, window_s=10)
    assert m.quantity == "sound_level"
    assert m.unit == "dB(A)"
    assert m.stats["laeq"] == pytest.approx(expected_db(amplitude, freq), abs=0.5)
    # A steady tone: maximum and background equal the equivalent level.
    assert m.stats["lamax"] == pytest.approx(m.stats["laeq"], abs=0.3)
    assert m.stats["la90"] == pytest.approx(m.stats["laeq"], abs=0.3)
    assert m.samples == 80  # 10 s of 125 ms blocks


def test_speech_recording_and_impulses(tmp_path: Path) -> None:
    need_service(shutil.which("espeak-ng") is not None, "espeak-ng (apt-get install espeak-ng)")
    speech = tmp_path / "speech.wav"
    text = "Bonjour. Ici le quai du port. La place est calme ce soir. Attention, un bruit soudain."
    subprocess.run(["espeak-ng", "-w", str(speech), text], check=True)
    quiet = sox(tmp_path, "quiet.wav", "pinknoise", "vol", "0.002", seconds=8.0)
    both = tmp_path / "street.wav"
    subprocess.run(["sox", str(quiet), "-r", "48000", str(both)], check=True)
    # Quiet background, then speech: speech is an impulse over a low L_A90.
    subprocess.run(["sox", str(quiet), "-r", "48000", str(tmp_path / "q48.wav")], check=True)
    subprocess.run(["sox", str(tmp_path / "q48.wav"), "-r", "48000", str(speech), "-r", "48000", str(both)],
                   check=True)  # fmt: skip
    measurements = measure(both, window_s=60)
    (m,) = measurements
    assert m.stats["lamax"] > m.stats["laeq"] > m.stats["la90"]
    assert m.stats["lamax"] - m.stats["la90"] > 20
    assert m.stats["impulses"] >= 1


def test_no_audio_reaches_a_message(tmp_path: Path) -> None:
    path = sox(tmp_path, "noise.wav", "whitenoise", "vol", "0.3", seconds=20.0)
    for m in measure(path, window_s=10):
        payload = wire.encode(m)
        assert len(payload) < 300  # 20 s of 48 kHz audio is 1.9 MB; a measurement is a few numbers
        body = msgpack.unpackb(payload)
        assert set(body) == set(wire.Measurement.model_fields)
        assert not any(isinstance(v, bytes | list) for v in body.values())
        assert set(body["stats"]) == {"laeq", "lamax", "la90", "impulses"}


def test_sht31_decoding_and_crc() -> None:
    assert crc8_sensirion(b"\xbe\xef") == 0x92  # the datasheet's example
    raw = SimulatedSHT31Bus(temperature=21.5, humidity=48.0).write_read(0x44, b"\x24\x00", 6)
    t, rh = decode_sht31(raw)
    assert t == pytest.approx(21.5, abs=0.01)
    assert rh == pytest.approx(48.0, abs=0.01)
    with pytest.raises(SensorError, match="CRC"):
        decode_sht31(raw[:2] + bytes([raw[2] ^ 1]) + raw[3:])


def test_pms5003_frames() -> None:
    port = SimulatedPMS5003Port(pm2_5=35)
    frame = port.read(32)
    assert decode_pms5003(frame) == {"pm1": 31.0, "pm2_5": 35.0, "pm10": 41.0}
    broken = frame[:10] + bytes([frame[10] ^ 0xFF]) + frame[11:]
    with pytest.raises(SensorError, match="checksum"):
        decode_pms5003(broken)
    with pytest.raises(SensorError, match="32 bytes"):
        decode_pms5003(frame[:20])
    sensor = PMS5003("pm", port)
    assert {r.quantity: r.value for r in sensor.read(0.0)}["pm2_5"] == 35.0


def test_unplugged_sensor_is_reported_not_fatal() -> None:
    published: list[wire.Measurement] = []
    bus = SimulatedSHT31Bus(fail_after_s=0.0)
    runner = SensorRunner(
        [SHT31("air", bus), PMS5003("pm", SimulatedPMS5003Port())],
        MeasurementAggregator(site="s", device="d", window_s=10),
        published.extend,
    )
    for i in range(4):
        runner.poll_once(1_700_000_000.0 + i)
    assert runner.health() == {"air": "silent", "pm": "ok"}
    runner.poll_once(1_700_000_011.0)
    assert {(m.sensor, m.quantity) for m in published} == {("pm", "pm1"), ("pm", "pm2_5"), ("pm", "pm10")}


def test_out_of_range_values_are_flagged_and_kept_out() -> None:
    published: list[wire.Measurement] = []
    runner = SensorRunner(
        [SHT31("air", SimulatedSHT31Bus(temperature=120.0))],  # a shorted thermistor reads absurdly hot
        MeasurementAggregator(site="s", device="d", window_s=10),
        published.extend,
    )
    runner.poll_once(1_700_000_000.0)
    runner.poll_once(1_700_000_011.0)
    assert runner.health() == {"air": "out_of_range"}
    assert [m.quantity for m in published] == ["humidity"]


def test_pir_presence_occupancy_and_onsets() -> None:
    from edge.sensors.environment import PIRPresence, SimulatedPIR

    t0 = 1_700_000_040.0  # a window boundary
    pin = SimulatedPIR(cycle_s=10.0, on_s=3.0, start=t0)
    published: list[wire.Measurement] = []
    aggregator = MeasurementAggregator(site="s", device="d", window_s=60)
    runner = SensorRunner([PIRPresence("door", pin)], aggregator, published.extend)
    for i in range(120):  # a minute at 2 readings a second
        pin.now = t0 + i * 0.5
        runner.poll_once(pin.now)
    runner.poll_once(t0 + 61)
    (m,) = published
    assert m.quantity == "presence"
    assert m.unit == "ratio"
    assert m.stats["occupancy"] == pytest.approx(0.3)
    assert m.stats["onsets"] == 5  # someone appears every 10 s; the first at t0 is not an onset
    assert runner.health() == {"door": "ok"}
