"""The forecast model: a non-negative blend (stacking) of the baselines, chosen on a validation period.

``λ(cell) = Σⱼ wⱼ · featureⱼ(cell)`` with ``w ≥ 0``, fitted by maximum Poisson likelihood
(identity link; the multiplicative EM update keeps the weights non-negative and
needs only numpy) on validation periods strictly before the test. A guard keeps
it honest: when the blend ranks cells worse than the best single baseline on the
validation periods, the blend *is* that baseline (weight 1). The tuned parameters
persist as JSON (``fusion.blend`` in the hub's store) and the hub serves them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["CANDIDATES", "BlendParams", "fit_weights"]

#: What the blend may use: every baseline plus near-repeat and neighbour terms.
CANDIDATES: tuple[str, ...] = (
    "all",
    "last:28",
    "ew:7",
    "ew:30",
    "ew:90",
    "kde",
    "seasonal",
    "recent:3",
    "neighbours:7",
)


@dataclass(frozen=True)
class BlendParams:
    """Tuned, persisted: what the hub computes for a horizon, and how it weighs it."""

    horizon: str  # "week" or "day"
    features: tuple[str, ...]
    weights: tuple[float, ...]
    kde_bandwidth_km: float
    resolution: int
    timezone: str
    tuned_on: tuple[str, str]  # the validation period, local dates [from, to)
    chosen: str  # "blend" or the baseline the guard fell back to
    fitted_at: str = (
        ""  # when the hub last refitted it on new data (UTC ISO 8601); "" = as tuned by a backtest
    )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> BlendParams:
        s = json.loads(text)
        return cls(
            horizon=s["horizon"],
            features=tuple(s["features"]),
            weights=tuple(float(w) for w in s["weights"]),
            kde_bandwidth_km=float(s["kde_bandwidth_km"]),
            resolution=int(s["resolution"]),
            timezone=s["timezone"],
            tuned_on=(s["tuned_on"][0], s["tuned_on"][1]),
            chosen=s["chosen"],
            fitted_at=str(s.get("fitted_at", "")),
        )

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Expected incidents per cell from the cells × features matrix (columns in ``features`` order)."""
        return np.asarray(features @ np.array(self.weights))


def fit_weights(
    blocks: Sequence[np.ndarray], actual: Sequence[np.ndarray], iterations: int = 300
) -> np.ndarray:
    """Non-negative Poisson weights over periods: cells × features blocks and their observed counts.

    EM for a mixture of known intensities: ``wⱼ ← wⱼ · Σ Fᵢⱼ yᵢ/λᵢ / Σ Fᵢⱼ``; it never leaves ``w ≥ 0``
    and increases the likelihood at every step.
    """
    f = np.vstack(blocks)
    y = np.concatenate(actual)
    mass = f.sum(axis=0)
    usable = mass > 0
    w = np.where(usable, 1.0 / max(int(usable.sum()), 1), 0.0)
    for _ in range(iterations):
        lam = np.maximum(f @ w, 1e-12)
        w = np.where(usable, w * (f.T @ (y / lam)) / np.maximum(mass, 1e-12), 0.0)
    return np.asarray(w)
