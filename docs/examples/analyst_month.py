"""A month of one district, day by day and per category, as a PNG chart (an analyst's first script).

    export VIGIE_PASSWORD=…
    python docs/examples/analyst_month.py --hub http://hub:8000 --user alice \\
        --district NOAILLES --month 2026-01 --out noailles-2026-01.png

Logs in, pulls the month of the fused cube for the district (daily buckets, every source
and category, all pages), and plots one line per category. Days the hub suppressed (under
k, or hidden with them) are hatched gaps, never zeros; days with no row had nothing (a
public zero). A district the hub does not know is an error naming the nearest names.
Needs ``pip install 'vigie[client]'`` (pandas, matplotlib). Run by ``tests/test_client.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from vigie.client import ClientError, HubClient


def month_bounds(month: str, tz: str) -> tuple[datetime, datetime]:
    """The first instants of the month and of the next one, in the city's time zone."""
    try:
        first = datetime.strptime(month, "%Y-%m").replace(tzinfo=ZoneInfo(tz))
    except ValueError:
        raise SystemExit(f"--month {month!r}: give a month as YYYY-MM, e.g. 2026-01") from None
    nxt = (first + timedelta(days=32)).replace(day=1)
    return first, nxt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hub", required=True, help="The hub's URL, e.g. http://hub:8000.")
    parser.add_argument("--user", required=True, help="An analyst's account.")
    parser.add_argument("--district", required=True, help="A named area (quartier), e.g. NOAILLES.")
    parser.add_argument("--month", required=True, help="YYYY-MM.")
    parser.add_argument("--tz", default="Europe/Paris", help="The city's time zone (default Europe/Paris).")
    parser.add_argument("--out", type=Path, default=Path("month.png"), help="PNG to write.")
    args = parser.parse_args(argv)
    password = os.environ.get("VIGIE_PASSWORD")
    if not password:
        print("set VIGIE_PASSWORD to the account's password (kept out of the command line)", file=sys.stderr)
        return 2
    since, until = month_bounds(args.month, args.tz)
    try:
        hub = HubClient.login(
            args.hub, args.user, password, purpose=f"monthly report: {args.district}, {args.month}"
        )
        frame = hub.cube_frame(bucket="day", zone=f"poly:{args.district}", since=since, until=until)
        unknown = frame.empty and unknown_district(hub, args.district)
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if unknown:
        print(f"error: {unknown}", file=sys.stderr)
        return 1
    plot(frame, args, since, until)
    return 0


def unknown_district(hub: HubClient, district: str) -> str:
    """Why ``district`` is not one of the hub's named areas (with the nearest names), or '' when it is."""
    import difflib

    names = [f["id"].removeprefix("poly:") for f in hub.pages("/v1/zones", {"kind": "poly"}, key="features")]
    if not names or district in names:
        return ""
    folded = {name.casefold(): name for name in names}  # NOAILLES for Noailles: case is the usual slip
    near = [folded[m] for m in difflib.get_close_matches(district.casefold(), folded, n=3, cutoff=0.5)]
    near = near or sorted(names)[:3]
    return (
        f"--district {district!r} is not a named area on this hub ({len(names)} areas; "
        f"did you mean {', '.join(map(repr, near))}?): give the name as the zones GeoJSON spells it"
    )


def plot(frame: Any, args: argparse.Namespace, since: datetime, until: datetime) -> None:
    """One line per category; suppressed days as gaps; a summary on standard output."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.ticker import MaxNLocator

    days = pd.date_range(since, until, freq="D", inclusive="left")
    fig, ax = plt.subplots(figsize=(10, 4))
    if frame.empty:
        print(f"{args.district} {args.month}: no data")
    else:
        frame = frame[(frame["start"] >= since) & (frame["start"] < until)]
        grid = days.tz_convert(frame["start"].dt.tz)
        by_day = frame.groupby(["start", "category"])["n"]
        # Sources summed per day and category; min_count=1 keeps a suppressed day NaN (a gap), not 0.
        counts = by_day.sum(min_count=1).unstack("category").reindex(grid)
        # No row at all for a day and category means nothing happened (the hub lists every
        # suppressed bucket): a public zero.
        listed = by_day.size().unstack("category").reindex(grid).notna()
        table = counts.where(listed, 0.0)
        served = frame["n"].notna()
        for category in table.columns:
            ax.plot(table.index, table[category], marker="o", label=category)
        # A gap alone reads as "no line here"; shade the days hiding a count, so nobody reads them as 0.
        hidden = table.isna().any(axis="columns")
        for i, day in enumerate(table.index[hidden]):
            label = "suppressed (under k): count hidden" if i == 0 else None
            ax.axvspan(day - pd.Timedelta(hours=12), day + pd.Timedelta(hours=12), facecolor="0.85",
                       hatch="//", edgecolor="0.6", linewidth=0, zorder=0, label=label)  # fmt: skip
        print(
            f"{args.district} {args.month}: {int(served.sum())} day-category counts served "
            f"(total {frame.loc[served, 'n'].sum():g}), {int((~served).sum())} suppressed"
        )
        ax.legend(title="category")
    ax.set_title(f"{args.district}, {args.month}: incidents per day (hatched: suppressed under k)")
    ax.set_ylabel("count")
    ax.set_ylim(bottom=0, top=max(1.0, ax.get_ylim()[1]))  # counts are never negative
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
