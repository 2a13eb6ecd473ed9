"""The one door to aggregates: routes get a :class:`ProtectedTable`, never the store's rows.

Each function reads what it needs from the store (a thin adapter) and returns rows
that already went through disclosure control (``hub/disclosure/tree.py``). The table
type can only be built here: a route that wants a number for an analyst has to come
through one of these functions, and ``tests/test_disclosure_attack.py`` checks that no
route module reads the store's aggregate queries itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from hub.disclosure.calendar import CityCalendar, Level
from hub.disclosure.tree import Cell, protect_series, spread_served
from hub.storage import CubeQuery, Store, walk_anomalies, walk_cube

__all__ = ["CubeFilter", "ProtectedTable", "anomaly_table", "cube_table", "served_hours"]

_TOKEN = object()
Series = tuple[str, str, str]  # zone, source, category


@dataclass(frozen=True)
class ProtectedTable:
    """Rows an analyst may see, with the aligned range they cover; built only by this module."""

    rows: tuple[dict[str, Any], ...]
    k: int
    since: int | None = None
    until: int | None = None
    _token: object = None

    def __post_init__(self) -> None:
        if self._token is not _TOKEN:
            raise TypeError("a ProtectedTable comes from hub.disclosure, never from raw rows")


#: Which series of the cube: a store query whose start, end and limit the layer sets itself, so that
#: only whole series (a zone, a source and a category each) and whole months are ever protected.
CubeFilter = CubeQuery


def _month_range(cal: CityCalendar, start: int | None, end: int | None) -> tuple[int | None, int | None]:
    """The whole months around [start, end): every month's tree is protected as one."""
    m_start = None if start is None else cal.start(start, "month")
    if end is None:
        return m_start, None
    m_end = cal.start(end, "month")
    return m_start, m_end if m_end == end else cal.end(m_end, "month")


def _protected(store: Store, flt: CubeFilter, start: int | None, end: int | None, k: int,
               cal: CityCalendar) -> dict[Series, dict[tuple[Level, int], Cell]]:  # fmt: skip
    m_start, m_end = _month_range(cal, start, end)
    # Every row of the range, page after page: a series cut short would be protected on a wrong total.
    rows = walk_cube(store, replace(flt, start=m_start, end=m_end, level="hour", after=None, limit=100_000))
    series: dict[Series, dict[int, float]] = defaultdict(dict)
    for r in rows:
        hours = series[(r["zone"], r["source"], r["category"])]
        hours[r["hour"]] = hours.get(r["hour"], 0.0) + r["n"]
    return {key: protect_series(hours, k, cal) for key, hours in series.items()}


def cube_table(store: Store, flt: CubeFilter, level: Level, since: int | None, until: int | None, k: int,
               cal: CityCalendar) -> ProtectedTable:  # fmt: skip
    """Buckets of ``level`` between ``since`` and ``until`` widened to whole buckets, after suppression."""
    start, end = cal.align(since, until, level)
    out = []
    for (zone, source, category), cells in _protected(store, flt, start, end, k, cal).items():
        for (lv, s), cell in cells.items():
            if lv == level and (start is None or s >= start) and (end is None or s < end):
                out.append({"zone": zone, "start": s, "end": cell.end, "bucket": level, "source": source,
                            "category": category, "n": None if cell.hidden else cell.n,
                            "suppressed": cell.hidden})  # fmt: skip
    out.sort(key=lambda r: (r["start"], r["zone"], r["source"], r["category"]))
    return ProtectedTable(tuple(out), k, start, end, _TOKEN)


def served_hours(store: Store, flt: CubeFilter, start: int | None, end: int | None, k: int,
                 cal: CityCalendar) -> ProtectedTable:  # fmt: skip
    """Hourly values in ``[start, end)`` computed from the served table alone, for derived outputs.

    A served hour keeps its count; hidden hours share, evenly, what their nearest served
    ancestor leaves (``hub/disclosure/tree.py::spread_served``). Forecasts learn from these
    rows, so no forecast can carry a suppressed count (``docs/privacy.md``). Rows carry
    ``zone``, ``hour``, ``source``, ``category`` and ``n`` (fractional where spread).
    """
    out = []
    for (zone, source, category), cells in _protected(store, flt, start, end, k, cal).items():
        for s, n in spread_served(cells, cal).items():
            if (start is None or s >= start) and (end is None or s < end):
                out.append({"zone": zone, "hour": s, "source": source, "category": category, "n": n})
    out.sort(key=lambda r: (r["hour"], r["zone"], r["source"], r["category"]))
    return ProtectedTable(tuple(out), k, start, end, _TOKEN)


def anomaly_table(store: Store, since: int | None, until: int | None, k: int,
                  cal: CityCalendar) -> ProtectedTable:  # fmt: skip
    """Anomalies on served hours only: an anomaly on a hidden hour is not served at all.

    Its ``expected`` and ``p`` would give the hidden count back (the Poisson tail
    inverts), and its mere existence says ``observed ≥ alert_min``; so the row goes,
    whole. Anomalies under k never come out either way (they are hidden hours).
    """
    rows = list(walk_anomalies(store, since, until))
    if not rows:
        return ProtectedTable((), k, since, until, _TOKEN)
    hours = [int(a["hour"]) for a in rows]
    flt = CubeFilter(zones=_distinct(a["zone"] for a in rows), sources=_distinct(a["source"] for a in rows),
                     categories=_distinct(a["category"] for a in rows))  # fmt: skip
    cells = _protected(store, flt, min(hours), max(hours) + 1, k, cal)
    served = []
    for a in rows:
        cell = cells.get((a["zone"], a["source"], a["category"]), {}).get(("hour", int(a["hour"])))
        if cell is not None and not cell.hidden and a["observed"] >= k:
            served.append({**a, "suppressed": False})
    return ProtectedTable(tuple(served), k, since, until, _TOKEN)


def _distinct(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))
