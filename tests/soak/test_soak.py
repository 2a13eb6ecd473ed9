"""The fleet simulator at 10,000 devices for 30 minutes: memory and latency stay flat, nothing is lost.

Outside the default test command (marker ``soak``):

    VIGIE_SOAK_S=1800 VIGIE_SOAK_DEVICES=10000 .venv/bin/pytest -m soak -s tests/soak

Every 10 s it samples the resident memory of the hub's ingest and of Mosquitto;
per minute it reads from the store the delivery latency of the events that
arrived in it (stored time minus the end of the event's window: what an
analyst waits). Flat means: the last five minutes' memory within 25 % (and
64 MB) of the first five minutes after warm-up, and their p99 latency within
twice the first's plus 2 s. A table, a CSV and a PNG go to ``VIGIE_SOAK_OUT``.
"""

from __future__ import annotations

import csv
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.chaos.harness import stored_events, stored_ids
from tests.conftest import need_service
from vigie.broker import find_mosquitto, start_broker
from vigie.netutil import free_port

pytestmark = pytest.mark.soak

DURATION_S = int(os.environ.get("VIGIE_SOAK_S", "1800"))
DEVICES = int(os.environ.get("VIGIE_SOAK_DEVICES", "10000"))
WARMUP_S = min(300, DURATION_S // 6)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def test_ten_thousand_devices_for_thirty_minutes(tmp_path: Path) -> None:
    need_service(find_mosquitto() is not None, "mosquitto")
    out = Path(os.environ.get("VIGIE_SOAK_OUT", str(tmp_path / "soak")))
    out.mkdir(parents=True, exist_ok=True)
    broker = start_broker(tmp_path / "broker", free_port())
    db = tmp_path / "hub.sqlite"
    with (out / "ingest.log").open("wb") as fh:
        ingest = subprocess.Popen(
            [sys.executable, "-m", "vigie", "--log-level", "WARNING", "hub", "ingest", "--db", str(db),
             "--broker", f"127.0.0.1:{broker.port}"],
            stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
    time.sleep(3)
    sim = subprocess.Popen(
        [sys.executable, "-m", "vigie", "sim", "--devices", str(DEVICES), "--duration", str(DURATION_S),
         "--broker", f"127.0.0.1:{broker.port}", "--heartbeat", "30", "--window", "10", "--zones", "2",
         "--connect-rate", "200"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    samples: list[dict[str, float]] = []
    started = time.monotonic()
    seen_at = 0.0
    try:
        while sim.poll() is None:
            time.sleep(10)
            t = time.monotonic() - started
            row = {
                "t_s": round(t),
                "hub_rss_mb": _rss_mb(ingest.pid),
                "broker_rss_mb": _rss_mb(broker.process.pid),
            }
            if int(t) % 60 < 10:  # once a minute: latency of what arrived since the last look
                recent = stored_events(db, since=int(time.time()) - 900)
                lat = [
                    e["received_at"] - (e["window_start"] + e["window_s"])
                    for e in recent
                    if e["received_at"] > seen_at and "window_s" in e
                ]
                seen_at = max((e["received_at"] for e in recent), default=seen_at)
                row |= {"events": len(lat), "p50_s": _percentile(lat, 0.5), "p99_s": _percentile(lat, 0.99)}
            samples.append(row)
            print(row, flush=True)
        sim_out = sim.stdout.read() if sim.stdout else ""
        time.sleep(20)  # the last windows reach the store
        acked = int(re.search(r"acknowledged by the broker (\d+)", sim_out).group(1))  # type: ignore[union-attr]
        copies = stored_ids(db)
        stored, distinct = len(copies), len(set(copies))
    finally:
        if sim.poll() is None:
            sim.kill()
        ingest.terminate()
        ingest.wait(timeout=60)
        broker.stop()
    _report(out, samples)
    early = [s for s in samples if WARMUP_S <= s["t_s"] < WARMUP_S + 300]
    late = [s for s in samples if s["t_s"] >= DURATION_S - 300]
    mem_early = statistics.median(s["hub_rss_mb"] for s in early)
    mem_late = statistics.median(s["hub_rss_mb"] for s in late)
    p99_early = max((s["p99_s"] for s in early if "p99_s" in s), default=0.0)
    p99_late = max((s["p99_s"] for s in late if "p99_s" in s), default=0.0)
    summary = (
        f"devices {DEVICES}, {DURATION_S} s: acked {acked}, stored {stored} ({distinct} distinct); "
        f"hub RSS {mem_early:.0f} -> {mem_late:.0f} MB; p99 latency {p99_early:.2f} -> {p99_late:.2f} s"
    )
    (out / "summary.txt").write_text(summary + "\n")
    print(summary)
    assert stored == distinct
    assert stored >= acked, summary  # every acknowledged event stored (a few unacknowledged may be too)
    assert mem_late <= max(mem_early * 1.25, mem_early + 64), summary
    assert p99_late <= 2 * p99_early + 2.0, summary


def _report(out: Path, samples: list[dict[str, float]]) -> None:
    keys = ["t_s", "hub_rss_mb", "broker_rss_mb", "events", "p50_s", "p99_s"]
    with (out / "samples.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, keys)
        w.writeheader()
        for s in samples:
            w.writerow({k: s.get(k, "") for k in keys})
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    t = [s["t_s"] / 60 for s in samples]
    ax1.plot(t, [s["hub_rss_mb"] for s in samples], label="hub ingest")
    ax1.plot(t, [s["broker_rss_mb"] for s in samples], label="Mosquitto")
    ax1.set_ylabel("resident memory, MB")
    ax1.legend()
    lat = [s for s in samples if "p99_s" in s]
    ax2.plot([s["t_s"] / 60 for s in lat], [s["p50_s"] for s in lat], label="p50")
    ax2.plot([s["t_s"] / 60 for s in lat], [s["p99_s"] for s in lat], label="p99")
    ax2.set_ylabel("window end to stored, s")
    ax2.set_xlabel("minutes")
    ax2.legend()
    fig.suptitle(f"{DEVICES} simulated devices")
    fig.tight_layout()
    fig.savefig(out / "soak.png", dpi=100)
