"""Online learning on the cube: seasonal baselines, anomaly scores, self-exciting short-term risk.

Everything here updates one closed hour at a time and never refits from scratch;
the whole state serialises to JSON, so a restart continues where it stopped and
feeding the same hours in two runs gives the same state as one run.

For each H3 cell ``z`` and category ``c``:

* **level** ``L[z,c]``: exponentially weighted mean count per hour (forgetting with
  half-life ``level_half_life_h``);
* **profile** ``S[c,w]``: city-wide hour-of-week shape (mean 1), also forgotten slowly;
* expected count ``μ = L · S``; an hour with ``x`` events scores the Poisson tail
  ``P(X ≥ x | μ)``: below ``alert_p`` (and ``x ≥ alert_min``) it raises an anomaly.

For the forecast target (incidents, police-initiated categories excluded), per cell:

* **excitation** ``E[z]``: recent events nearby, decaying with time constant ``tau_h``
  (an exponential-kernel Hawkes/ETAS process: near-repeat victimisation), spilling
  over to the ring of neighbouring cells with weight ``neighbour_weight``;
* intensity ``λ(z, t+k) = Lₛ(z)·S(w) · exp(β·x(z)) + θ/τ · E[z] · e^(−k/τ)`` where ``Lₛ``
  is the level smoothed with the neighbours (weight ``smooth``) and ``x(z)`` the
  covariates from the other sources (their counts in the cell over the last 24 h);
  ``θ`` and ``β`` follow the Poisson likelihood by online gradient steps.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import h3
import numpy as np

__all__ = ["LearnerParams", "OnlineModel", "hour_of_week", "hourly_counts", "poisson_sf"]

HOUR = 3600
WEEK_H = 168


def hour_of_week(hour_epoch: int) -> int:
    """0 = Monday 00:00 UTC … 167 = Sunday 23:00 (epoch 0 was a Thursday)."""
    return int((hour_epoch // HOUR + 72) % WEEK_H)


def poisson_sf(x: float, mu: float) -> float:
    """P(X ≥ x) for X ~ Poisson(mu), computed in log space (stable for large x)."""
    k = math.ceil(x)
    if k <= 0:
        return 1.0
    if mu <= 0:
        return 0.0
    # 1 - P(X <= k-1); for the tail far above mu, sum the tail terms directly.
    if k > mu:
        log_p = -mu + k * math.log(mu) - math.lgamma(k + 1)
        total, term, i = 0.0, 1.0, k
        while term > 1e-12 * total or total == 0.0:
            total += term
            i += 1
            term *= mu / i
            if i > k + 10_000:
                break
        return min(1.0, math.exp(log_p) * total)
    cdf, term = 0.0, math.exp(-mu)
    for i in range(k):
        cdf += term
        term *= mu / (i + 1)
    return max(0.0, 1.0 - cdf)


@dataclass(frozen=True)
class LearnerParams:
    """Hyper-parameters (chosen on training data; see ``vigie hub backtest``)."""

    level_half_life_h: float = 24 * 7 * 12
    profile_half_life_h: float = 24 * 7 * 26
    tau_h: float = 24 * 7
    theta: float = 0.1
    neighbour_weight: float = 0.2
    smooth: float = 0.1
    learning_rate: float = 0.01  # AdaGrad step: scale-free, however many cells there are
    alert_p: float = 1e-4
    alert_min: int = 5  # ≥ the hub's k: an anomaly is never about a count that k hides
    covariate_window_h: int = 24


@dataclass
class OnlineModel:
    """The learner's state (arrays grow as new cells and categories appear)."""

    params: LearnerParams = field(default_factory=LearnerParams)
    target_source: str = "police"
    excluded: set[str] = field(default_factory=set)  # "source:category" left out of training
    watermark: int | None = None  # the last hour processed
    cells: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)  # "source:category"
    level: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # cells × categories
    profile: np.ndarray = field(default_factory=lambda: np.ones((0, WEEK_H)))  # categories × 168
    excitation: np.ndarray = field(default_factory=lambda: np.zeros(0))  # cells
    target_level: np.ndarray = field(default_factory=lambda: np.zeros(0))  # cells
    target_profile: np.ndarray = field(default_factory=lambda: np.ones(WEEK_H))
    covariates: list[str] = field(default_factory=list)  # "source:category" of the other sources
    beta: np.ndarray = field(default_factory=lambda: np.zeros(0))
    theta: float = -1.0  # set from params on first use
    recent: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # covariate window
    grad2: list[float] = field(default_factory=lambda: [0.0])  # AdaGrad accumulators: θ, then each β
    hours_seen: int = 0

    # -- indexing ------------------------------------------------------------------------
    def _cell(self, cell: str) -> int:
        index = self._cell_index()
        if cell not in index:
            index[cell] = len(self.cells)
            self.cells.append(cell)
            self.level = np.vstack([self.level, np.zeros((1, self.level.shape[1]))])
            self.excitation = np.append(self.excitation, 0.0)
            self.target_level = np.append(self.target_level, 0.0)
        return index[cell]

    def _cell_index(self) -> dict[str, int]:
        cached: dict[str, int] | None = getattr(self, "_ci", None)
        if cached is None or len(cached) != len(self.cells):
            cached = {c: i for i, c in enumerate(self.cells)}
            object.__setattr__(self, "_ci", cached)
        return cached

    def _category(self, key: str) -> int:
        if key not in self.categories:
            self.categories.append(key)
            self.level = np.hstack([self.level, np.zeros((self.level.shape[0], 1))])
            self.profile = np.vstack([self.profile, np.ones((1, WEEK_H))])
        return self.categories.index(key)

    def _covariate(self, key: str) -> int:
        if key not in self.covariates:
            self.covariates.append(key)
            self.beta = np.append(self.beta, 0.0)
        return self.covariates.index(key)

    def is_target(self, source: str, category: str) -> bool:
        return source == self.target_source and f"{source}:{category}" not in self.excluded

    # -- learning ------------------------------------------------------------------------
    def update_hour(self, hour: int, counts: Mapping[tuple[str, str, str], float]) -> list[dict[str, Any]]:
        """Learn from one closed hour: ``counts[(h3 cell, source, category)]``; returns its anomalies.

        Hours must come in increasing order; hours with no data in between are
        learnt as zero hours (what "nothing happened" teaches).
        """
        if self.theta < 0:
            self.theta = self.params.theta
        if self.watermark is not None and hour <= self.watermark:
            raise ValueError(f"hour {hour} is not after the last one learnt ({self.watermark})")
        if self.watermark is not None:
            gap = (hour - self.watermark) // HOUR - 1
            if gap > 2 * WEEK_H:
                self._skip(gap)  # weeks without data: forget in closed form rather than hour by hour
            else:
                for empty in range(self.watermark + HOUR, hour, HOUR):
                    self._learn({}, empty)
        anomalies = self._learn(counts, hour)
        self.watermark = hour
        return anomalies

    def _debias(self) -> float:
        """Exponentially weighted means start at 0: divide by the weight seen so far (as Adam does)."""
        a = 1 - 0.5 ** (1 / self.params.level_half_life_h)
        return float(1.0 / max(1 - (1 - a) ** max(self.hours_seen, 1), 1e-9))

    def _skip(self, hours: int) -> None:
        a = 1 - 0.5 ** (1 / self.params.level_half_life_h)
        self.level *= (1 - a) ** hours
        self.target_level *= (1 - a) ** hours
        self.excitation *= math.exp(-hours / self.params.tau_h)
        self.recent = []
        self.hours_seen += hours

    def _learn(self, counts: Mapping[tuple[str, str, str], float], hour: int) -> list[dict[str, Any]]:
        p = self.params
        w = hour_of_week(hour)
        for cell, source, category in counts:
            self._cell(cell)
            self._category(f"{source}:{category}")
        n_cells, n_cats = self.level.shape
        x = np.zeros((n_cells, n_cats))
        target = np.zeros(n_cells)
        cov_now: dict[str, float] = defaultdict(float)
        ci = self._cell_index()
        for (cell, source, category), n in counts.items():
            i, j = ci[cell], self.categories.index(f"{source}:{category}")
            x[i, j] += n
            if self.is_target(source, category):
                target[i] += n
            elif source != self.target_source:
                cov_now[f"{cell}|{source}:{category}"] += n
                self._covariate(f"{source}:{category}")

        # Anomalies: this hour against what was expected before seeing it.
        mu = self.level * self._debias() * self.profile[:, w][None, :]
        anomalies = []
        for i, j in zip(*np.nonzero(x >= p.alert_min), strict=True):
            pv = poisson_sf(float(x[i, j]), float(mu[i, j]))
            if pv < p.alert_p and self.hours_seen >= WEEK_H:
                source, _, category = self.categories[j].partition(":")
                anomalies.append(
                    {
                        "zone": f"h3:{self.cells[i]}",
                        "hour": hour,
                        "source": source,
                        "category": category,
                        "observed": float(x[i, j]),
                        "expected": float(mu[i, j]),
                        "p": pv,
                    }
                )

        # Online gradient step on θ and β (Poisson log-likelihood of the target this hour).
        if self.hours_seen >= WEEK_H:
            base = self._smoothed(self.target_level) * self._debias() * self.target_profile[w]
            cov = self._covariate_matrix()
            lift = np.exp(np.clip(cov @ self.beta, -5, 5)) if self.beta.size else np.ones(n_cells)
            trig = self.excitation * (1 - math.exp(-1 / p.tau_h))
            lam = np.maximum(base * lift + self.theta * trig, 1e-9)
            resid = target / lam - 1.0
            # AdaGrad: each step divided by the root of the squared gradients so far, so the step
            # does not depend on how many cells the city has.
            g = float(resid @ trig)
            self.grad2[0] += g * g
            self.theta = float(
                np.clip(self.theta + p.learning_rate * g / (math.sqrt(self.grad2[0]) + 1e-12), 0, 5)
            )
            if self.beta.size:
                grad = (resid * base * lift) @ cov
                if len(self.grad2) < 1 + grad.size:
                    self.grad2 = self.grad2 + [0.0] * (1 + grad.size - len(self.grad2))
                for k, gk in enumerate(grad):
                    self.grad2[1 + k] += float(gk) ** 2
                steps = grad / (np.sqrt(np.array(self.grad2[1 : 1 + grad.size])) + 1e-12)
                self.beta = np.clip(self.beta + p.learning_rate * steps, -2.0, 2.0)

        # Levels and profiles, with forgetting.
        a = 1 - 0.5 ** (1 / p.level_half_life_h)
        b = 1 - 0.5 ** (1 / p.profile_half_life_h)
        self.level += a * (x - self.level)
        self.target_level += a * (target - self.target_level)
        city = x.sum(axis=0)
        expected = np.maximum(self.level.sum(axis=0), 1e-9)
        ratio = np.where(city > 0, city / expected, 0.0) if n_cats else city
        self.profile[:, w] += b * (ratio - self.profile[:, w])
        self.profile /= np.maximum(self.profile.mean(axis=1, keepdims=True), 1e-9)
        t_city = target.sum()
        t_exp = max(float(self.target_level.sum()), 1e-9)
        self.target_profile[w] += b * (t_city / t_exp - self.target_profile[w])
        self.target_profile /= max(float(self.target_profile.mean()), 1e-9)

        # Excitation: decay, then this hour's target events and their neighbours.
        self.excitation *= math.exp(-1 / p.tau_h)
        for hit in np.nonzero(target)[0]:
            i = int(hit)
            self.excitation[i] += target[i]
            if p.neighbour_weight > 0:
                for nb in h3.grid_ring(self.cells[i], 1):
                    k = self._cell(nb)  # may grow the arrays: index first
                    self.excitation[k] += p.neighbour_weight * target[i]

        self.recent.append((hour, dict(cov_now)))
        self.recent = [(h, c) for h, c in self.recent if h > hour - p.covariate_window_h * HOUR]
        self.hours_seen += 1
        return anomalies

    def _neighbours(self) -> np.ndarray:
        """cells × 6 indices of each cell's ring-1 neighbours (-1 where not a known cell); cached."""
        cached: np.ndarray | None = getattr(self, "_nb", None)
        if cached is not None and cached.shape[0] == len(self.cells):
            return cached
        ci = self._cell_index()
        start = 0 if cached is None else cached.shape[0]
        rows = [] if cached is None else [cached]
        # Cells added since the last build: their rows, and the old rows that may now see them.
        fresh = np.full((len(self.cells) - start, 6), -1, dtype=np.int64)
        for i in range(start, len(self.cells)):
            for k, n in enumerate(h3.grid_ring(self.cells[i], 1)):
                fresh[i - start, k] = ci.get(n, -1)
        rows.append(fresh)
        nb = np.vstack(rows)
        if start:
            for i in range(start, len(self.cells)):
                for n in h3.grid_ring(self.cells[i], 1):
                    j = ci.get(n, -1)
                    if 0 <= j < start and i not in nb[j]:
                        free = np.nonzero(nb[j] == -1)[0]
                        if free.size:
                            nb[j, free[0]] = i
        object.__setattr__(self, "_nb", nb)
        return nb

    def _smoothed(self, values: np.ndarray) -> np.ndarray:
        s = self.params.smooth
        if s <= 0 or not len(values):
            return values
        nb = self._neighbours()
        padded = np.append(values, 0.0)  # index -1 reads the 0 at the end
        mean: np.ndarray = padded[nb].sum(axis=1) / 6.0
        smoothed: np.ndarray = (1 - s) * values + s * mean
        return smoothed

    def _covariate_matrix(self) -> np.ndarray:
        cov = np.zeros((len(self.cells), len(self.covariates)))
        if not self.covariates:
            return cov
        ci = self._cell_index()
        totals: dict[str, float] = defaultdict(float)
        for _, hour_cov in self.recent:
            for key, n in hour_cov.items():
                totals[key] += n
        for key, n in totals.items():
            cell, _, cov_key = key.partition("|")
            if cell in ci and cov_key in self.covariates:
                cov[ci[cell], self.covariates.index(cov_key)] = math.log1p(n)
        return cov

    # -- forecasting ---------------------------------------------------------------------
    def forecast(self, horizon_h: int, start_hour: int | None = None) -> dict[str, float]:
        """Expected number of target events per cell over the next ``horizon_h`` hours."""
        if not self.cells:
            return {}
        start = (
            (self.watermark + HOUR)
            if start_hour is None and self.watermark is not None
            else (start_hour or 0)
        )
        p = self.params
        shape = sum(float(self.target_profile[hour_of_week(start + k * HOUR)]) for k in range(horizon_h))
        base = self._smoothed(self.target_level) * self._debias() * shape
        if self.beta.size:
            base = base * np.exp(np.clip(self._covariate_matrix() @ self.beta, -5, 5))
        theta = self.theta if self.theta >= 0 else p.theta
        triggered = theta * self.excitation * (1 - math.exp(-horizon_h / p.tau_h))
        total = base + triggered
        return {cell: float(v) for cell, v in zip(self.cells, total, strict=True)}

    # -- persistence ---------------------------------------------------------------------
    def to_json(self) -> str:
        state = {
            "params": asdict(self.params),
            "target_source": self.target_source,
            "excluded": sorted(self.excluded),
            "watermark": self.watermark,
            "cells": self.cells,
            "categories": self.categories,
            "level": self.level.tolist(),
            "profile": self.profile.tolist(),
            "excitation": self.excitation.tolist(),
            "target_level": self.target_level.tolist(),
            "target_profile": self.target_profile.tolist(),
            "covariates": self.covariates,
            "beta": self.beta.tolist(),
            "theta": self.theta,
            "recent": self.recent,
            "hours_seen": self.hours_seen,
            "grad2": self.grad2,
        }
        return json.dumps(state, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> OnlineModel:
        s = json.loads(text)
        n_cats = len(s["categories"])
        return cls(
            params=LearnerParams(**s["params"]),
            target_source=s["target_source"],
            excluded=set(s["excluded"]),
            watermark=s["watermark"],
            cells=s["cells"],
            categories=s["categories"],
            level=np.array(s["level"], dtype=float).reshape(len(s["cells"]), n_cats),
            profile=np.array(s["profile"], dtype=float).reshape(n_cats, WEEK_H),
            excitation=np.array(s["excitation"], dtype=float),
            target_level=np.array(s["target_level"], dtype=float),
            target_profile=np.array(s["target_profile"], dtype=float),
            covariates=s["covariates"],
            beta=np.array(s["beta"], dtype=float),
            theta=s["theta"],
            recent=[(int(h), dict(c)) for h, c in s["recent"]],
            hours_seen=s["hours_seen"],
            grad2=[float(g) for g in s["grad2"]],
        )


def hourly_counts(rows: Iterable[dict[str, Any]]) -> dict[int, dict[tuple[str, str, str], float]]:
    """Cube rows (H3 zones) grouped by hour: {hour: {(cell, source, category): n}}."""
    out: dict[int, dict[tuple[str, str, str], float]] = defaultdict(dict)
    for r in rows:
        if r["zone"].startswith("h3:") and r.get("span_h", 1) == 1:
            out[r["hour"]][(r["zone"][3:], r["source"], r["category"])] = r["n"]
    return out
