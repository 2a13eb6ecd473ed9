"""Telemetry helpers: percentiles, thermal hysteresis, OS readings."""

from __future__ import annotations

from pathlib import Path

from edge.telemetry import LatencyWindow, ProcessMonitor, disk_free_mb, percentile, rss_mb, too_hot


def test_percentiles_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile([], 95) == 0.0
    window = LatencyWindow()
    for v in (10.0, 12.0, 30.0):
        window.add(v)
    assert window.take() == (3, 12.0, 30.0)
    assert window.take() == (0, 0.0, 0.0)


def test_thermal_throttle_has_hysteresis() -> None:
    assert not too_hot(79.0, 80.0, was_hot=False)
    assert too_hot(80.5, 80.0, was_hot=False)
    assert too_hot(78.0, 80.0, was_hot=True)  # still hot until it is 3 °C below the limit
    assert not too_hot(76.9, 80.0, was_hot=True)
    assert not too_hot(None, 80.0, was_hot=True)  # no sensor: never throttle
    assert not too_hot(95.0, None, was_hot=False)


def test_os_readings_are_plausible(tmp_path: Path) -> None:
    assert 10 < rss_mb() < 4000
    assert disk_free_mb(tmp_path / "outbox.sqlite") > 0
    monitor = ProcessMonitor()
    sum(i * i for i in range(200_000))
    assert monitor.cpu_percent() > 0
