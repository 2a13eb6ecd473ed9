"""Staged rollouts as pure functions: who goes in which wave, and whether a wave passes its health gate."""

from __future__ import annotations

import hashlib
import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DeviceOutcome",
    "GateDecision",
    "GatePolicy",
    "crash_looping",
    "evaluate_gate",
    "plan_waves",
]

DEFAULT_WAVES = (0.01, 0.10, 0.50, 1.0)


def plan_waves(
    devices: Sequence[str], fractions: Sequence[float] = DEFAULT_WAVES, *, seed: str = ""
) -> list[list[str]]:
    """Split devices into waves: ``fractions`` are cumulative (1 % canary, then 10 %, 50 %, 100 %).

    The order is a hash of the seed (the campaign id) and the device, so a campaign's waves are
    reproducible and not always the same devices first. Each wave has at least one device.

    Raises:
        ValueError: fractions that do not increase to 1.
    """
    if not fractions or any(b <= a for a, b in itertools.pairwise(fractions)) or fractions[-1] != 1.0:
        raise ValueError(f"waves {list(fractions)}: cumulative fractions, increasing, ending at 1.0")
    order = sorted(devices, key=lambda d: hashlib.sha256(f"{seed}/{d}".encode()).hexdigest())
    waves: list[list[str]] = []
    taken = 0
    for fraction in fractions:
        upto = max(taken + 1, math.ceil(fraction * len(order))) if taken < len(order) else taken
        waves.append(order[taken:upto])
        taken = upto
    return [w for w in waves if w]


class GatePolicy(BaseModel):
    """When a wave may lead to the next."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_failure_rate: float = Field(default=0.0, ge=0, le=1, description="Share of failed devices tolerated.")
    max_latency_ms: float | None = Field(default=None, gt=0, description="Median smoke-test latency ceiling.")
    timeout_s: float = Field(default=900, gt=0, description="Devices silent this long count as failed.")
    max_drift: float | None = Field(
        default=None,
        gt=0,
        description="Median change in detections vs the previous model on reference frames.",
    )
    min_reporting: float = Field(default=1.0, gt=0, le=1, description="Share that must have finished.")
    max_restarts: int | None = Field(
        default=2,
        ge=0,
        description="Agent restarts on the new model (seen in heartbeats) beyond which a device is "
        "crash-looping and counts as failed.",
    )
    soak_s: float = Field(
        default=0, ge=0, description="Seconds a wave must run on the new model before it may pass."
    )


@dataclass(frozen=True)
class DeviceOutcome:
    """What one device of the wave reported last."""

    step: str
    latency_ms: float | None = None
    at: float = 0.0
    drift: float | None = None
    restarts: int = 0


@dataclass(frozen=True)
class GateDecision:
    verdict: Literal["wait", "pass", "halt"]
    reason: str
    installed: int
    failed: int
    pending: int


FINAL_OK = {"installed"}
FINAL_BAD = {"failed", "rolled_back"}


def crash_looping(
    devices: Sequence[str], outcomes: Mapping[str, DeviceOutcome], policy: GatePolicy
) -> list[str]:
    """Devices that installed, then restarted more than ``policy.max_restarts`` times on the new model.

    The listener's own crash watch catches an agent that dies at once; a crash loop that starts
    later (an input the smoke test never saw) shows only as the uptime of successive heartbeats
    falling back, which the hub counts into ``restarts``.
    """
    if policy.max_restarts is None:
        return []
    return [
        d
        for d in devices
        if d in outcomes and outcomes[d].step in FINAL_OK and outcomes[d].restarts > policy.max_restarts
    ]


def evaluate_gate(
    wave: Sequence[str],
    outcomes: Mapping[str, DeviceOutcome],
    policy: GatePolicy,
    *,
    started: float,
    now: float,
) -> GateDecision:
    """``pass``: enough of the wave installed, fast enough; ``halt``: too many failures; else ``wait``.

    Crash-looping devices count as failed; a wave passes only once its last install has run
    ``policy.soak_s`` seconds.
    """
    looping = crash_looping(wave, outcomes, policy)
    installed = [d for d in wave if d in outcomes and outcomes[d].step in FINAL_OK and d not in looping]
    failed = [d for d in wave if d in outcomes and (outcomes[d].step in FINAL_BAD or d in looping)]
    pending = [d for d in wave if d not in installed and d not in failed]
    timed_out = now - started > policy.timeout_s
    if timed_out:
        failed += pending
        pending = []
    total = len(wave)
    if failed and len(failed) / total > policy.max_failure_rate:
        why = (
            "silent past the timeout"
            if timed_out
            else "crash-looping on the new model (restarts in heartbeats)"
            if looping and len(looping) == len(failed)
            else "update failed"
        )
        return GateDecision(
            "halt",
            f"{len(failed)} of {total} devices {why} (max {policy.max_failure_rate:.0%})",
            len(installed),
            len(failed),
            len(pending),
        )
    if pending and (total - len(pending)) / total < policy.min_reporting:
        return GateDecision(
            "wait",
            f"{len(pending)} of {total} devices still updating",
            len(installed),
            len(failed),
            len(pending),
        )
    latencies = [lat for d in installed if (lat := outcomes[d].latency_ms) is not None]
    if policy.max_latency_ms is not None and latencies:
        median = statistics.median(latencies)
        if median > policy.max_latency_ms:
            return GateDecision(
                "halt",
                f"median inference {median:.0f} ms over the gate's {policy.max_latency_ms:g} ms",
                len(installed),
                len(failed),
                len(pending),
            )
    drifts = [dr for d in installed if (dr := outcomes[d].drift) is not None]
    if policy.max_drift is not None and drifts and statistics.median(drifts) > policy.max_drift:
        median_drift = statistics.median(drifts)
        reason = (
            f"detections changed by {median_drift:.0%} vs the previous model (gate {policy.max_drift:.0%})"
        )
        return GateDecision("halt", reason, len(installed), len(failed), len(pending))
    soaked = max((outcomes[d].at for d in installed), default=now) + policy.soak_s
    if now < soaked:
        reason = f"{len(installed)} of {total} installed; soaking until the last has run {policy.soak_s:g} s"
        return GateDecision("wait", reason, len(installed), len(failed), len(pending))
    return GateDecision(
        "pass", f"{len(installed)} of {total} installed", len(installed), len(failed), len(pending)
    )
