"""Who runs a campaign, and what the devices said: pure functions over the stored campaign.

Every hub process may run the campaign service; one runner per campaign is kept by a **lease**
stored in the campaign's own row (``doc["lease"]``: holder, until). The lease is read, taken,
renewed and released inside the same row-locked transaction as each step of the campaign
(:meth:`hub.campaigns.CampaignStore.modify`), so a step is only ever written by the holder of
an unexpired lease; a process that died stops renewing and another takes over once ``until``
has passed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hub.storage import Campaign

__all__ = ["lease_holder", "merge_reports", "take_lease"]


def lease_holder(doc: Campaign, now: float) -> str | None:
    """The process running the campaign now, or None when nobody holds an unexpired lease."""
    lease = doc.get("lease")
    if not lease or lease.get("until", 0) <= now:
        return None
    holder: str = lease["holder"]
    return holder


def take_lease(doc: Campaign, holder: str, now: float, lease_s: float) -> dict[str, Any] | None:
    """The ``lease`` field once ``holder`` has taken or renewed it; None when another holds it."""
    current = lease_holder(doc, now)
    if current not in (None, holder):
        return None
    previous = doc.get("lease") or {}
    since = previous.get("since", now) if previous.get("holder") == holder and current else now
    return {"holder": holder, "until": now + lease_s, "since": since}


def merge_reports(
    outcomes: Mapping[str, Mapping[str, Any]],
    reports: Mapping[str, Mapping[str, Any]],
    beats: Mapping[str, Sequence[tuple[int, str]]],
    version: str,
) -> dict[str, dict[str, Any]]:
    """The campaign's outcomes with the devices' new OTA reports and heartbeats folded in.

    ``reports``: the last ``ota_state`` of each device for this campaign (``step``, ``at``, …); a
    report repeating the step already stored (a retained message seen again after a takeover)
    keeps the first time. ``beats``: ``(uptime_s, model)`` of each heartbeat since the last merge,
    in order; on a device that installed, a heartbeat on the campaign's version whose uptime is
    below the previous one is an agent restart, counted in ``restarts`` (the health gate's crash
    loops, :func:`ota.rollout.crash_looping`).
    """
    merged = {device: dict(o) for device, o in outcomes.items()}
    for device, report in reports.items():
        old = merged.get(device, {})
        new = {**report, "restarts": old.get("restarts", 0), "uptime": old.get("uptime")}
        if old.get("step") == report.get("step"):
            new["at"] = old.get("at", report.get("at"))
        merged[device] = new
    for device, seen in beats.items():
        outcome = merged.get(device)
        if outcome is None or outcome.get("step") != "installed":
            continue
        for uptime, model in seen:
            if not model.endswith(f"@{version}"):
                continue
            previous = outcome.get("uptime")
            if previous is not None and uptime < previous:
                outcome["restarts"] = outcome.get("restarts", 0) + 1
            outcome["uptime"] = uptime
    return merged
