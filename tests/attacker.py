"""An analyst turned attacker: everything served, as linear facts on the hidden counts, solved by LP.

The unknowns are the true finest-grain counts of planted cells: one per (zone, source,
category, hour) of the cube and one per (event, class) of the devices' windows. Each
number an analyst receives becomes a fact: a served count is an equality (the sum of
the unknowns it covers equals the value), a count served as ``<k`` an upper bound, an
anomaly whose ``expected`` and ``p`` are served a direct reveal (the Poisson tail is
inverted), a suppression only "hidden". For each cell the attacker then finds the
smallest and largest value consistent with all of it.

The solver is HiGHS through scipy: ``scipy.optimize.linprog`` minimises and maximises
the cell over the linear relaxation, then ``scipy.optimize.milp`` tightens both ends to
integers (counts are whole), so the interval is the exact integer one. A small exact
solver of its own (bounds propagation and depth-first search, :meth:`Knowledge.exact_interval`)
stays as a cross-check: ``tests/test_disclosure_attack.py`` asserts the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from hub.fusion.learning import poisson_sf

__all__ = ["BIG", "Knowledge", "invert_poisson_tail"]

Key = Hashable
#: An upper bound for counts nothing bounds (the search never enumerates it).
BIG = 10_000
HOUR = 3600
_EPOCH_SIZES = {"hour": HOUR, "day": 86_400, "week": 7 * 86_400}


def invert_poisson_tail(expected: float, p: float, limit: int = 500) -> int | None:
    """The count ``x`` with ``P(X ≥ x | expected) == p``, when one matches (attack 1 of issue 16)."""
    for x in range(limit):
        if abs(poisson_sf(float(x), expected) - p) <= 1e-9 * max(p, 1e-300):
            return x
    return None


@dataclass
class Knowledge:
    """What the attacker knows: bounds per unknown and equalities (set of unknowns, value)."""

    lo: dict[Key, int] = field(default_factory=dict)
    hi: dict[Key, int] = field(default_factory=dict)
    eqs: dict[frozenset[Key], int] = field(default_factory=dict)
    why: dict[frozenset[Key], str] = field(default_factory=dict)
    contradictions: list[str] = field(default_factory=list)
    #: The forecasts fetched, per horizon (hours): model outputs, not linear facts.
    forecasts: dict[int, dict[str, float]] = field(default_factory=dict)

    def unknown(self, key: Key, lo: int = 1) -> None:
        """A planted cell: its existence is public (suppressed rows are listed), its count is not."""
        self.lo.setdefault(key, lo)
        self.hi.setdefault(key, BIG)

    def equal(self, keys: Iterable[Key], value: float, why: str) -> None:
        ks = frozenset(k for k in keys if k in self.lo)
        if not ks:
            if round(value) != 0:
                self.contradictions.append(f"{why}: {value} served over no planted cell")
            return
        self.eqs[ks] = round(value)
        self.why.setdefault(ks, why)

    def at_most(self, key: Key, value: int) -> None:
        if key in self.hi:
            self.hi[key] = min(self.hi[key], value)

    # -- solving ------------------------------------------------------------------------------
    def _component(self, key: Key) -> list[tuple[frozenset[Key], int]]:
        seen, todo, eqs = {key}, [key], []
        by_key: dict[Key, list[frozenset[Key]]] = {}
        for ks in self.eqs:
            for k in ks:
                by_key.setdefault(k, []).append(ks)
        done: set[frozenset[Key]] = set()
        while todo:
            for ks in by_key.get(todo.pop(), []):
                if ks not in done:
                    done.add(ks)
                    eqs.append((ks, self.eqs[ks]))
                    for k in ks - seen:
                        seen.add(k)
                        todo.append(k)
        return eqs

    def interval(self, key: Key) -> tuple[int, int]:
        """Smallest and largest value of ``key`` given everything known: LP, then integer (HiGHS)."""
        eqs = self._component(key)
        keys = sorted({k for ks, _ in eqs for k in ks} | {key}, key=repr)
        col = {k: i for i, k in enumerate(keys)}
        a = np.zeros((len(eqs), len(keys)))
        b = np.array([float(v) for _, v in eqs])
        for row, (ks, _) in enumerate(eqs):
            for k in ks:
                a[row, col[k]] = 1.0
        lo = np.array([float(self.lo[k]) for k in keys])
        hi = np.array([float(self.hi[k]) if self.hi[k] < BIG else np.inf for k in keys])
        ends = []
        for sign in (1.0, -1.0):
            c = np.zeros(len(keys))
            c[col[key]] = sign
            relaxed = linprog(c, A_eq=a if eqs else None, b_eq=b if eqs else None,
                              bounds=list(zip(lo, hi, strict=True)), method="highs")  # fmt: skip
            if relaxed.status == 2:
                raise AssertionError(f"the served numbers contradict each other around {key}")
            if relaxed.status == 3:  # unbounded above: nothing caps this cell
                ends.append(BIG)
                continue
            assert relaxed.status == 0, relaxed.message
            whole = milp(c, integrality=np.ones(len(keys)), bounds=Bounds(lo, hi),
                         constraints=[LinearConstraint(a, b, b)] if eqs else [])  # fmt: skip
            assert whole.status == 0, whole.message
            # The integer optimum lies inside the LP's: ceil/floor of the relaxation bound it.
            value = round(whole.x[col[key]])
            assert (math.ceil(relaxed.x[col[key]] - 1e-6) <= value) if sign > 0 else \
                (value <= math.floor(relaxed.x[col[key]] + 1e-6))  # fmt: skip
            ends.append(min(value, BIG))
        return ends[0], ends[1]

    def exact_interval(self, key: Key) -> tuple[int, int]:
        """The same interval by the attacker's own exact integer search (a cross-check of the LP)."""
        eqs = self._component(key)
        lo = {k: self.lo[k] for ks, _ in eqs for k in ks} or {key: self.lo[key]}
        hi = {k: self.hi[k] for k in lo}
        if not _propagate(eqs, lo, hi):
            raise AssertionError(f"the served numbers contradict each other around {key}")
        if not eqs or hi[key] >= BIG:
            return lo[key], hi[key]
        low = next(v for v in range(lo[key], hi[key] + 1) if _feasible(eqs, {**lo, key: v}, {**hi, key: v}))
        high = next(v for v in range(hi[key], low - 1, -1) if _feasible(eqs, {**lo, key: v}, {**hi, key: v}))
        return low, high


def _propagate(eqs: list[tuple[frozenset[Key], int]], lo: dict[Key, int], hi: dict[Key, int]) -> bool:
    """Bounds consistency on sums of non-negative unknowns; False when infeasible."""
    changed = True
    while changed:
        changed = False
        for ks, v in eqs:
            slo = sum(lo[k] for k in ks)
            shi = sum(hi[k] for k in ks)
            if slo > v or shi < v:
                return False
            for k in ks:
                new_lo, new_hi = max(lo[k], v - (shi - hi[k])), min(hi[k], v - (slo - lo[k]))
                if new_lo > new_hi:
                    return False
                if (new_lo, new_hi) != (lo[k], hi[k]):
                    slo += new_lo - lo[k]
                    shi += new_hi - hi[k]
                    lo[k], hi[k] = new_lo, new_hi
                    changed = True
    return True


def _feasible(eqs: list[tuple[frozenset[Key], int]], lo: dict[Key, int], hi: dict[Key, int]) -> bool:
    lo, hi = dict(lo), dict(hi)
    if not _propagate(eqs, lo, hi):
        return False
    open_ = [k for k in lo if lo[k] < hi[k]]
    if not open_:
        return True
    k = min(open_, key=lambda x: hi[x] - lo[x])
    return any(_feasible(eqs, {**lo, k: v}, {**hi, k: v}) for v in range(lo[k], hi[k] + 1))


# -- reading what was served ------------------------------------------------------------------------
def cube_facts(know: Knowledge, rows: Iterable[Mapping[str, Any]], since: int | None, until: int | None,
               why: str) -> None:  # fmt: skip
    """Cube rows (API, CSV or GeoJSON) as equalities on the hours they cover.

    A row with an ``end`` covers exactly [start, end) (whole calendar buckets). A row
    without one is read as the old API served it: the bucket [start, start + size) cut
    to ``since``/``until`` rounded to multiples of the size on the epoch.
    """
    for r in rows:
        if r.get("n") in (None, ""):
            continue
        bucket = str(r["bucket"])
        start = int(r["start"])
        if r.get("end") not in (None, ""):
            lo_t, hi_t = start, int(r["end"])
        else:
            size = _EPOCH_SIZES[bucket]
            lo_t, hi_t = start, start + size
            if since is not None:
                lo_t = max(lo_t, since - since % size)
            if until is not None:
                hi_t = min(hi_t, -(-until // size) * size)
        series = (r["zone"], r["source"], r["category"])
        keys = [k for k in know.lo if isinstance(k, tuple) and k[:1] == ("cube",) and k[1:4] == series
                and lo_t <= k[4] < hi_t]  # fmt: skip
        know.equal(keys, float(r["n"]), f"{why} {series} {bucket} {start}")


def anomaly_facts(know: Knowledge, rows: Iterable[Mapping[str, Any]], why: str) -> None:
    for a in rows:
        key = ("cube", a["zone"], a["source"], a["category"], int(a["hour"]))
        if a.get("observed") is not None:
            know.equal([key], float(a["observed"]), f"{why} observed")
        elif a.get("expected") is not None and a.get("p") is not None:
            x = invert_poisson_tail(float(a["expected"]), float(a["p"]))
            if x is not None:
                know.equal([key], x, f"{why} expected+p inverted")


def event_facts(know: Knowledge, rows: Iterable[Mapping[str, Any]], why: str) -> None:
    for e in rows:
        for label, v in (e.get("counts") or {}).items():
            key = ("event", e["id"], label)
            if isinstance(v, int | float):
                know.equal([key], v, f"{why} count")
            elif isinstance(v, str) and v.startswith("<"):
                know.at_most(key, int(v[1:]) - 1)


Window = tuple[str, str, str, int]  # site, device, place, window start


def rollup_facts(
    know: Knowledge, rows: Iterable[Mapping[str, Any]], windows: Mapping[Key, Window], why: str
) -> None:
    """``peak:<class>`` totals as sums of the windows' counts in that hour and place; ``max`` as a bound."""
    for r in rows:
        kind, _, label = str(r["metric"]).partition(":")
        if kind != "peak":
            continue
        keys = [k for k, (site, device, place, start) in windows.items()
                if k[2] == label and (site, device, place) == (r["site"], r["device"], r["place"])
                and r["hour"] <= start < r["hour"] + HOUR]  # fmt: skip
        if r.get("total") is not None:
            know.equal(keys, float(r["total"]), f"{why} total")
        if r.get("max") is not None:
            for k in keys:
                know.at_most(k, int(r["max"]))


def camera_cube_facts(
    know: Knowledge,
    rows: Iterable[Mapping[str, Any]],
    rollups: Iterable[Mapping[str, Any]],
    windows: Mapping[Key, Window],
    placed: Mapping[str, Iterable[str]],
) -> None:
    """Served camera rows of the cube as sums of device windows, where a row covers one roll-up.

    ``hub/fusion/cameras.py`` puts a ``peak:<class>`` roll-up in the cube as its mean (total / n,
    with ``n`` served by ``/v1/rollups``) and a crossing roll-up as its total, in every zone the
    device is placed in (``placed``: ``site/device`` → zone keys). When one roll-up is all a served
    row holds, the row times its ``n`` (or the row itself) is the sum of that roll-up's windows;
    rows mixing several roll-ups are weighted sums this attacker leaves out.
    """
    rollups = list(rollups)
    for r in rows:
        if r.get("n") is None or r.get("source") != "camera":
            continue
        label = str(r["category"])
        kind = "peak"
        if label.startswith("crossings:"):
            continue  # crossings are not planted as unknowns here
        inside = [u for u in rollups if str(u["metric"]) == f"{kind}:{label}"
                  and r["zone"] in placed.get(f"{u['site']}/{u['device']}", ())
                  and r["start"] <= u["hour"] < r["end"]]  # fmt: skip
        if len(inside) != 1:
            continue
        u = inside[0]
        keys = [k for k, (site, device, place, start) in windows.items()
                if k[2] == label and (site, device, place) == (u["site"], u["device"], u["place"])
                and u["hour"] <= start < u["hour"] + HOUR]  # fmt: skip
        know.equal(keys, float(r["n"]) * int(u["n"]), f"camera cube {r['zone']} {r['start']} × n")
