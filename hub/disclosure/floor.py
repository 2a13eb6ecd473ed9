"""Per-window device counts: the floor under k, roll-ups that cannot be differenced, device k (pure).

Who reads what (``docs/privacy.md``):

* analysts (``events:read``) get each window's counts with every count under the hub's
  k served as the string ``"<k"`` (and its mean left out), whatever k the device used;
* an hour's roll-up of counts (``peak:``, ``forward:``, ``backward:``) is a sum of windows,
  so "hour total minus the served windows" would give the floored ones back: its
  ``total`` and ``mean`` are served only when every window of the hour is provably at
  least k (``total - (n-1)·max ≥ k``), and ``max`` only when it is at least k;
* operators see devices' health, not counts (their role has no ``events:read``).

The hub also refuses events counted with a k below its minimum (``min_device_k``): they
are quarantined with the reason, never stored.
"""

from __future__ import annotations

from typing import Any

from vigie import wire

__all__ = ["COUNT_METRICS", "coarse_arrival", "device_k_refusal", "floor_event", "protect_rollup"]

#: Roll-up metrics that are sums of per-window counts of objects.
COUNT_METRICS = ("peak", "forward", "backward")


def _floor(counts: dict[str, Any], k: int) -> tuple[dict[str, Any], set[str]]:
    out, floored = {}, set()
    for label, v in counts.items():
        if isinstance(v, str) or (isinstance(v, int | float) and 0 < v < k):
            out[label] = f"<{k}"
            floored.add(label)
        else:
            out[label] = v
    return out, floored


def floor_event(row: dict[str, Any], k: int) -> dict[str, Any]:
    """An event as an analyst may read it: no count under k, whatever the device's own k."""
    out = dict(row)
    floored: set[str] = set()
    for field in ("counts", "forward", "backward"):
        if isinstance(row.get(field), dict):
            out[field], labels = _floor(row[field], k)
            floored |= labels
    if isinstance(row.get("mean_counts"), dict):
        out["mean_counts"] = {label: v for label, v in row["mean_counts"].items() if label not in floored}
    return out


def protect_rollup(row: dict[str, Any], k: int) -> dict[str, Any]:
    """A roll-up row with total/mean/max hidden when they could reveal a window under k."""
    kind = str(row.get("metric", "")).partition(":")[0]
    if kind not in COUNT_METRICS:
        return {**row, "suppressed": False}
    n, total, top = int(row["n"]), float(row["total"]), float(row["max"])
    # The smallest window is at least total - (n - 1)·max: when that is ≥ k, no window is under k.
    whole = total >= k and total - (n - 1) * top >= k
    return {**row, "total": total if whole else None, "mean": row.get("mean") if whole else None,
            "max": top if top >= k else None, "suppressed": not whole}  # fmt: skip


def device_k_refusal(message: wire.Message, min_k: int) -> str | None:
    """Why the hub refuses an event counted with too small a k, or None when it is accepted."""
    k = getattr(message, "k", None)
    if isinstance(k, int) and k < min_k:
        return (
            f"counted with k = {k}, below the hub's minimum {min_k}: set `k` to at least {min_k} in the "
            "device's site configuration (or lower VIGIE_HUB_MIN_DEVICE_K, knowingly)"
        )
    return None


def coarse_arrival(received_at: float) -> float:
    """An alert's arrival time as the hub stores it: on the alerts' grid, never the second it came.

    The device publishes at the grid boundary (the edge's side of issue 16); the arrival second would
    still tell the broker's and the hub's clocks when the rule fired, so it is not kept.
    """
    grid = wire.ALERT_GRANULARITY_S
    return float(int(received_at // grid) * grid)
