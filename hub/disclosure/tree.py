"""Primary and secondary suppression on one series' calendar tree (pure).

One series is one zone, source and category; its hours nest in days, weeks and
months (``hub/disclosure/calendar.py``), so each month is a hierarchical table: every
node is the sum of its children. Served nodes are known exactly; a hidden node is
known to exist (its row is listed) and nothing else.

1. **Primary**: every node under ``k`` is hidden.
2. **Secondary** (complementary), solved across all levels jointly: the attacker's
   interval for every hidden node is computed by bounds propagation over all the
   equations of the tree (parent = Σ children) at once. On a tree of sums this is exact
   (the equations form an acyclic network of interval constraints), so it is the same
   interval the LP attacker of ``tests/test_disclosure_attack.py`` finds. Whenever a node
   under k is pinned (its interval is one value, or meets 1..k-1 in one value), one more
   node is hidden: the smallest served sibling on the way up (down to an hour, so that it
   is not known again as the sum of its children), or else the parent. Repeat until no
   node under k is pinned.

This is the hierarchical secondary suppression of statistical offices, in its
simplest greedy form: τ-ARGUS (Hundepool et al., *Statistical Disclosure Control*,
Wiley 2012, ch. 4, "hypercube" and "modular" methods) and R's sdcTable
(``protectTable``, Meindl 2011) solve the same problem with an optimal (least
information lost) choice of the secondary cells; here the choice is greedy (smallest
sibling first), which hides somewhat more but needs no solver at request time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hub.disclosure.calendar import CityCalendar, Level

__all__ = ["Cell", "Node", "pinned", "protect_series", "spread_served"]

Node = tuple[Level, int]  # (level, bucket start)
BIG = float("inf")


@dataclass(frozen=True, slots=True)
class Cell:
    """One bucket of one series after disclosure control."""

    level: Level
    start: int
    end: int
    n: float
    hidden: bool


class _Tree:
    def __init__(self, hours: Mapping[int, float], cal: CityCalendar) -> None:
        self.value: dict[Node, float] = {}
        self.parent: dict[Node, Node] = {}
        self.children: dict[Node, list[Node]] = {}
        for hour, n in hours.items():
            if n <= 0:
                continue  # an empty bucket has no row: its zero is public
            node: Node = ("hour", hour)
            self.value[node] = self.value.get(node, 0.0) + n
            while (up := cal.parent(node[1], node[0])) is not None:
                if node not in self.parent:
                    self.parent[node] = up
                    self.children.setdefault(up, []).append(node)
                self.value[up] = self.value.get(up, 0.0) + n
                node = up

    def bounds(self, hidden: set[Node]) -> tuple[dict[Node, float], dict[Node, float]]:
        """What an attacker knows of every node, from every served node at once."""
        lo = {x: (1.0 if x in hidden else v) for x, v in self.value.items()}
        hi = {x: (BIG if x in hidden else v) for x, v in self.value.items()}
        eqs = [
            (p, kids) for p, kids in self.children.items() if p in hidden or any(c in hidden for c in kids)
        ]
        changed = True
        while changed:
            changed = False
            for p, kids in eqs:
                new = (max(lo[p], sum(lo[c] for c in kids)), min(hi[p], _sum_hi(hi[c] for c in kids)))
                if new != (lo[p], hi[p]):
                    lo[p], hi[p], changed = new[0], new[1], True
                for c in kids:
                    others_lo = sum(lo[o] for o in kids if o != c)
                    others_hi = _sum_hi(hi[o] for o in kids if o != c)
                    c_new = (max(lo[c], lo[p] - others_hi), min(hi[c], hi[p] - others_lo))
                    if c_new != (lo[c], hi[c]):
                        lo[c], hi[c], changed = c_new[0], c_new[1], True
        return lo, hi

    def hide_down(self, node: Node, hidden: set[Node]) -> None:
        """Hide ``node``, and its smallest child when none is hidden (it would be their sum)."""
        while True:
            hidden.add(node)
            kids = self.children.get(node, [])
            if not kids or any(c in hidden for c in kids):
                return
            node = min(kids, key=lambda c: (self.value[c], c))

    def widen(self, node: Node, hidden: set[Node]) -> bool:
        """One more hidden node around ``node``; False when there is none left to hide."""
        while node in self.parent:
            p = self.parent[node]
            served = [s for s in self.children[p] if s not in hidden]
            if served:
                self.hide_down(min(served, key=lambda s: (self.value[s], s)), hidden)
                return True
            if p not in hidden:
                hidden.add(p)
                return True
            node = p
        return False


def _sum_hi(values: Iterable[float]) -> float:
    """A sum of upper bounds, infinite when one is (never inf - inf, which would be NaN)."""
    total = 0.0
    for v in values:
        if v == BIG:
            return BIG
        total += v
    return total


def pinned(lo: float, hi: float, k: int) -> bool:
    """True when the interval gives the value away: one value, or one value in 1..k-1."""
    return lo == hi or min(hi, k - 1) - max(lo, 1) < 1


def protect_series(hours: Mapping[int, float], k: int, cal: CityCalendar) -> dict[Node, Cell]:
    """Every bucket (hour, day, week, month) of one series, with ``hidden`` set by both suppressions."""
    tree = _Tree(hours, cal)
    hidden = {x for x, v in tree.value.items() if v < k}
    for _ in range(len(tree.value) + 1):
        lo, hi = tree.bounds(hidden)
        bad = sorted(x for x in hidden if tree.value[x] < k and pinned(lo[x], hi[x], k))
        if not bad:
            break
        if not any([tree.widen(x, hidden) for x in bad]):
            hidden = set(tree.value)  # nothing left to widen: hide the whole series
            break
    return {x: Cell(x[0], x[1], cal.end(x[1], x[0]), v, x in hidden) for x, v in tree.value.items()}


def spread_served(cells: Mapping[Node, Cell], cal: CityCalendar) -> dict[int, float]:
    """Hourly values computed from the served cells of one series alone (what forecasts learn from).

    A served hour keeps its count. What a served node leaves once the served counts inside
    it are taken out is spread over its hidden hours evenly, top down; a hidden month adds
    nothing to the served counts inside it. Only served counts, the tree and which rows are
    hidden (all public) are read, never a hidden count: the result is a function of what
    any analyst can fetch, so nothing derived from it can carry more.
    """
    kids: dict[Node, list[Node]] = {}
    for node in cells:
        up = cal.parent(node[1], node[0])
        if up is not None and up in cells:
            kids.setdefault(up, []).append(node)

    def hidden_hours(node: Node) -> int:
        below = kids.get(node, [])
        return 1 if not below else sum(hidden_hours(c) for c in below if cells[c].hidden)

    def known(node: Node) -> float:
        """What the served cells inside a hidden node add up to (its lowest possible value)."""
        return sum(cells[c].n if not cells[c].hidden else known(c) for c in kids.get(node, []))

    share = {x: (known(x) if c.hidden else c.n) for x, c in cells.items() if x[0] == "month"}
    out: dict[int, float] = {}
    for level in ("month", "week", "day", "hour"):
        for node in sorted(x for x in share if x[0] == level):
            if level == "hour":
                if share[node] > 0:
                    out[node[1]] = share[node]
                continue
            below = kids.get(node, [])
            hidden = [c for c in below if cells[c].hidden]
            floor = {c: known(c) for c in hidden}
            rest = max(share[node] - sum(cells[c].n for c in below if not cells[c].hidden)
                       - sum(floor.values()), 0.0)  # fmt: skip
            weights = {c: hidden_hours(c) for c in hidden}
            total = sum(weights.values())
            for c in below:
                share[c] = cells[c].n
                if cells[c].hidden:
                    share[c] = floor[c] + (rest * weights[c] / total if total else 0.0)
    return out
