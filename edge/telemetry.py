"""Health telemetry read from the OS (no extra dependency): CPU, memory, disk, temperature, latency."""

from __future__ import annotations

import math
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LatencyWindow", "ProcessMonitor", "cpu_temperature_c", "disk_free_mb", "percentile", "rss_mb", "too_hot"
]  # fmt: skip

_THERMAL = (
    Path("/sys/class/thermal/thermal_zone0/temp"),  # Raspberry Pi, most SoCs
    Path("/sys/devices/virtual/thermal/thermal_zone0/temp"),  # Jetson
)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


@dataclass
class LatencyWindow:
    """Inference latencies since the last heartbeat."""

    samples: list[float]

    def __init__(self) -> None:
        self.samples = []

    def add(self, ms: float) -> None:
        self.samples.append(ms)

    def take(self) -> tuple[int, float, float]:
        """(count, p50, p95) and start a new window."""
        s, self.samples = self.samples, []
        return len(s), round(percentile(s, 50), 2), round(percentile(s, 95), 2)


def cpu_temperature_c() -> float | None:
    """SoC temperature from sysfs (Pi, Jetson), or None where there is none."""
    for path in _THERMAL:
        try:
            return round(int(path.read_text().strip()) / 1000.0, 1)
        except (OSError, ValueError):
            continue
    return None


def rss_mb() -> float:
    """Current resident memory of this process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def disk_free_mb(path: Path) -> float:
    """Free space on the file system holding ``path``."""
    target = path if path.exists() else path.parent
    st = os.statvfs(target if str(target) else ".")
    return round(st.f_bavail * st.f_frsize / 1e6, 1)


class ProcessMonitor:
    """CPU use of this process between two calls (100 = one core busy)."""

    def __init__(self) -> None:
        self._cpu = time.process_time()
        self._wall = time.monotonic()

    def cpu_percent(self) -> float:
        cpu, wall = time.process_time(), time.monotonic()
        used = (cpu - self._cpu) / max(wall - self._wall, 1e-6) * 100.0
        self._cpu, self._wall = cpu, wall
        return round(max(used, 0.0), 1)


def too_hot(temp_c: float | None, limit_c: float | None, *, was_hot: bool, hysteresis_c: float = 3.0) -> bool:
    """Throttle above the limit, and stay throttled until the SoC is ``hysteresis_c`` below it."""
    if temp_c is None or limit_c is None:
        return False
    return temp_c >= (limit_c - hysteresis_c if was_hot else limit_c)
