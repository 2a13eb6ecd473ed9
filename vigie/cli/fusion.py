"""CLI for city data fusion: `vigie hub import SOURCE FILE`, `vigie hub learn`, `vigie hub backtest FILE`."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from vigie.cli.options import FMT, LazyChoices, add_db, hub_settings
from vigie.exceptions import ConfigError

__all__ = ["register"]

MAPPINGS = Path(__file__).resolve().parents[2] / "hub" / "fusion" / "mappings"


def _zones(parser: argparse.ArgumentParser) -> None:
    # None: the hub setting (env VIGIE_HUB_H3_RES, VIGIE_HUB_ZONES, VIGIE_HUB_ZONES_NAME, else its default).
    parser.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="H3 resolution of the cells (default 8: about 0.74 km²; env VIGIE_HUB_H3_RES).",
    )
    parser.add_argument(
        "--zones",
        type=Path,
        default=None,
        help="GeoJSON of named areas (quartiers, districts); env VIGIE_HUB_ZONES.",
    )
    parser.add_argument(
        "--zone-name",
        default=None,
        help="The GeoJSON property holding each area's name (default nom_qua).",
    )


def _connectors() -> dict[str, Any]:
    try:  # an edge-only install (a Pi) may lack the hub's modules: the CLI must still start
        from hub.fusion.connectors import CONNECTORS
    except ImportError:
        return {}
    return dict(CONNECTORS)


def _describe_sources() -> str:
    """The connectors, for ``vigie hub import --help`` (imports the hub only when shown)."""
    return "\n".join(f"  {name:<10} {c.description}" for name, c in _connectors().items())


def _mapping_path(value: str) -> Path:
    path = Path(value)
    if path.exists():
        return path
    shipped = MAPPINGS / f"{value}.yaml"
    if shipped.exists():
        return shipped
    known = ", ".join(sorted(p.stem for p in MAPPINGS.glob("*.yaml")))
    raise argparse.ArgumentTypeError(f"mapping {value!r}: no such file, and not a shipped mapping ({known})")


def _delimiter(value: str) -> str:
    text = {"tab": "\t", "\\t": "\t"}.get(value, value)
    if len(text) != 1:
        raise argparse.ArgumentTypeError(f"delimiter {value!r}: give one character (',', ';', '|') or 'tab'")
    return text


def register(hub_sub: Any) -> None:
    """Add ``import``, ``learn``, ``cameras`` and ``backtest`` under ``vigie hub``."""
    _register_import(hub_sub)
    _register_learn(hub_sub)
    _register_backtest(hub_sub)


def _register_import(hub_sub: Any) -> None:
    imp = hub_sub.add_parser(
        "import",
        formatter_class=FMT,
        help="Import a city data file (police logbook, fire brigade, parks, presence, transport, hospital).",
        description="Read FILE with the SOURCE connector and its mapping (which columns mean what), keep "
        "only the mapped columns (free text and person fields are never read), map every row to its H3 "
        "cell and named area, and add the counts to the fused cube. Rows that are wrong are reported "
        "with their number and field, not imported. The whole file is one transaction: a crash imports "
        "nothing, and the same file imported twice adds nothing.\n\nSources:\n",
        describe=_describe_sources,
        epilog="Examples:\n"
        "  vigie hub import police logbook.csv --mapping main_courante --zones quartiers.geojson\n"
        "  vigie hub import police houston_crime_2010_ggmap.csv.gz --mapping houston_police\n"
        "  vigie hub import police main_courante_2026.csv --mapping main_courante --encoding latin-1\n"
        "  vigie hub import transport validations.csv --mapping transport.yaml --gtfs feed.zip\n",
    )
    source = imp.add_argument("source", help="The connector.")
    LazyChoices.attach(source, lambda: list(_connectors()))
    imp.add_argument("file", type=Path, help="CSV file (plain or .gz).")
    imp.add_argument(
        "--mapping",
        type=_mapping_path,
        required=True,
        help="Mapping YAML, or the name of a shipped one (hub/fusion/mappings/).",
    )
    imp.add_argument(
        "--gtfs", type=Path, default=None, help="transport: the GTFS feed (zip) placing the stops."
    )
    imp.add_argument(
        "--encoding",
        default=None,
        help="Text encoding, e.g. latin-1 or cp1252 (default: the mapping's, else UTF-8 when the file is, "
        "else cp1252 with a warning).",
    )
    imp.add_argument(
        "--delimiter",
        type=_delimiter,
        default=None,
        help="Field separator: ',', ';', 'tab' or '|' (default: the mapping's, else the one that splits "
        "the header into the mapping's columns).",
    )
    imp.add_argument("--no-learn", action="store_true", help="Do not learn from the new hours now.")
    add_db(imp)
    _zones(imp)
    imp.set_defaults(handler=_import)


def _register_learn(hub_sub: Any) -> None:
    learn = hub_sub.add_parser(
        "learn",
        formatter_class=FMT,
        help="Learn from the cube's closed hours: baselines, anomalies, forecast state.",
        description="Feed every closed hour after the model's watermark to the online model (the hub "
        "also does this after each import). The state is kept in the store.",
    )
    add_db(learn)
    _zones(learn)
    learn.set_defaults(handler=_learn)
    _register_cameras(hub_sub)


def _register_cameras(hub_sub: Any) -> None:

    cams = hub_sub.add_parser(
        "cameras",
        formatter_class=FMT,
        help="Place the cameras (from site files) and fold their hourly counts into the cube.",
        description="Read each site file's location (or a camera's own `location: [lat, lon]`), remember "
        "where every device is, and add the cameras' and sensors' hourly roll-ups to the cube (source "
        "`camera`: mean peak count per class, crossings; source `sensor`: hourly means). `vigie hub learn` "
        "folds new hours by itself afterwards.",
        epilog="Example:\n  vigie hub cameras firmware_configs/sites/*.yaml --zones quartiers.geojson\n",
    )
    cams.add_argument("sites", type=Path, nargs="+", help="Site files.")
    add_db(cams)
    _zones(cams)
    cams.set_defaults(handler=_cameras)


def _register_backtest(hub_sub: Any) -> None:

    bt = hub_sub.add_parser(
        "backtest",
        formatter_class=FMT,
        help="Backtest the forecast under the standard protocol: baselines, tuned blend, oracle.",
        description="Score hot-spot forecasts over --weeks calendar weeks (Monday-Sunday, in the city's time "
        "zone) from --until, at the weekly horizon, the daily one, or both. The study area is fixed in "
        "advance: the cells of --boundary (GeoJSON), else of the convex hull of ALL the file's incidents. "
        "PAI divides by the share of the area actually flagged; ties go to the lower cell id. Baselines: "
        "all-history counts, last 7/28 days, exponentially weighted counts (7, 30, 90 days), KDE and the "
        "seasonal hour-of-week profile; the model is their non-negative Poisson blend plus near-repeat "
        "and neighbour terms, tuned on the periods just before --until and kept only where it beats every "
        "baseline there. Writes a Markdown report per horizon with a reliability plot, and the tuned "
        "parameters (blend-<horizon>.json); --save also stores them for the hub to serve.",
        epilog="Example:\n  vigie hub backtest ../shared/data/incidents/houston_crime_2010_ggmap.csv.gz "
        "--mapping houston_police --until 2010-05-03 --weeks 17 --out backtest/\n",
    )
    bt.add_argument("file", type=Path, help="Incident file (CSV, plain or .gz).")
    bt.add_argument("--mapping", type=_mapping_path, required=True, help="Mapping YAML or shipped name.")
    bt.add_argument("--source", default=None, help="Connector (default: the mapping's).")
    bt.add_argument(
        "--until",
        "--train-until",
        dest="until",
        required=True,
        help="First test day, YYYY-MM-DD, a Monday, in the city's time zone (the mapping's city_timezone).",
    )
    bt.add_argument(
        "--weeks", type=_int_in(1, 10_000), default=None, help="Test weeks (default: every whole week left)."
    )
    bt.add_argument(
        "--horizon", choices=("week", "day", "both"), default="both", help="Forecast horizon (default both)."
    )
    bt.add_argument(
        "--boundary", type=Path, default=None, help="GeoJSON of the city's boundary (study area)."
    )
    bt.add_argument(
        "--resolution",
        type=_int_in(0, 15),
        default=8,
        help="H3 resolution, 0-15 (default 8, about 0.74 km²).",
    )
    bt.add_argument("--out", type=Path, default=Path("backtest"), help="Report folder (default ./backtest).")
    bt.add_argument("--save", action="store_true", help="Store the tuned parameters for the hub to serve.")
    add_db(bt)
    bt.set_defaults(handler=_backtest)


def _int_in(low: int, high: int) -> Any:
    """An argparse type: a whole number in [low, high], refused with the range (not a bare value)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}-{high}")
        return value

    return parse


def _zone_index(args: argparse.Namespace) -> Any:
    from hub.fusion.zones import ZoneIndex, load_geojson

    settings = hub_settings(args)
    try:
        polygons = load_geojson(settings.zones, settings.zones_name) if settings.zones else []
    except ValueError as exc:  # a user's file: one line, exit 2, nothing stored (main prints it)
        raise ConfigError(str(exc)) from None
    return ZoneIndex(settings.h3_resolution, polygons)


def _import(args: argparse.Namespace) -> int:
    from hub.disclosure.calendar import CityCalendar
    from hub.fusion.importer import import_file
    from hub.fusion.observation import load_mapping
    from hub.fusion.service import learn_pending, set_exclusions
    from hub.storage import open_store
    from vigie.progress import Progress

    mapping = load_mapping(args.mapping)
    overrides = {"encoding": args.encoding, "delimiter": args.delimiter}
    mapping = mapping.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    store = open_store(hub_settings(args).db)
    bar = Progress(f"importing {args.file.name}", "rows")
    options = {"gtfs": args.gtfs} if args.source == "transport" else {}
    try:
        report = import_file(
            store, args.source, args.file, mapping, _zone_index(args), progress=bar, **options
        )
    except ValueError as exc:
        print(f"vigie: error: {exc}", file=sys.stderr)
        return 2
    finally:
        bar.done()
    if report.duplicate_file:
        # The file is the unit (importing it twice must not double its counts): rows it rejected
        # then can come in only as a file of their own, once the mapping knows them.
        print(
            f"{args.file}: already imported (same content); nothing added. Rows it rejected then stay "
            "out: after fixing the mapping, import a file holding only those rows"
        )
        return 0
    print(f"{args.file}: {report.rows} rows, {report.imported} imported, {report.rejected} rejected")
    for reason, n in sorted(report.by_reason.items(), key=lambda kv: -kv[1])[:10]:
        print(f"  {n:>7}  {reason}")
    for error in report.errors[:10]:
        print(f"  e.g. {error}")
    for warning in report.warnings:
        print(f"warning: {warning}")
    if report.rows and not report.imported:
        print(f"vigie: error: {args.file}: no row imported (nothing stored): fix the file or the mapping "
              "as the reasons above say, then import it again", file=sys.stderr)  # fmt: skip
        store.close()
        return 1
    if mapping.exclude_from_training:
        set_exclusions(store, mapping.source, mapping.exclude_from_training)
    if not args.no_learn:
        settings = hub_settings(args)
        learnt = learn_pending(
            store, progress=Progress("learning", "hours"), k=settings.k, cal=CityCalendar(settings.tz)
        )
        print(f"learnt {learnt.hours} hours; {learnt.anomalies} anomalies")
    store.close()
    return 0


def _cameras(args: argparse.Namespace) -> int:
    from hub.fusion.cameras import fold_cameras, locations_from_sites, save_locations
    from hub.storage import open_store

    try:
        locations = locations_from_sites(args.sites)
    except (ValueError, KeyError, OSError) as exc:
        print(f"vigie: error: {exc}", file=sys.stderr)
        return 2
    store = open_store(hub_settings(args).db)
    save_locations(store, locations)
    rows, unplaced = fold_cameras(store, _zone_index(args), k=hub_settings(args).k)
    store.close()
    print(f"{len(locations)} devices placed; {rows} cube rows from their roll-ups")
    if unplaced:
        print(f"no location for {', '.join(sorted(unplaced))}: add their site files")
    return 0


def _learn(args: argparse.Namespace) -> int:
    from hub.disclosure.calendar import CityCalendar
    from hub.fusion.cameras import fold_cameras, load_locations
    from hub.fusion.served import served_model
    from hub.fusion.service import learn_pending, load_blend, load_model
    from hub.storage import open_store
    from vigie.progress import Progress

    store = open_store(hub_settings(args).db)
    if load_locations(store):
        rows, _ = fold_cameras(store, _zone_index(args), k=hub_settings(args).k)
        print(f"cameras: {rows} cube rows refreshed from their roll-ups")
    bar = Progress("learning", "hours")
    settings = hub_settings(args)
    outcome = learn_pending(store, progress=bar, k=settings.k, cal=CityCalendar(settings.tz))
    bar.done()
    served_model(store, load_model(store), settings.k, CityCalendar(settings.tz))  # what forecasts read
    for horizon in ("week", "day"):
        tuned = load_blend(store, horizon)
        serves = (
            f"the tuned blend ({tuned.chosen}, tuned on {tuned.tuned_on[0]} to {tuned.tuned_on[1]}"
            + (f", refitted {tuned.fitted_at})" if tuned.fitted_at else ")")
            if tuned
            else "the online model (store a tuned blend with vigie hub backtest --save)"
        )
        print(f"forecast ({horizon}): {serves}")
    store.close()
    when = (
        dt.datetime.fromtimestamp(outcome.watermark, dt.UTC).isoformat()
        if outcome.watermark
        else "nothing yet"
    )
    print(f"learnt {outcome.hours} hours, {outcome.anomalies} anomalies; model up to {when}")
    return 0


def _backtest(args: argparse.Namespace) -> int:
    from hub.fusion.runner import BacktestRequest, run_backtest

    try:
        until = dt.date.fromisoformat(args.until)
    except ValueError:
        print(f"vigie: error: --until {args.until!r}: write a date as YYYY-MM-DD", file=sys.stderr)
        return 2
    request = BacktestRequest(
        file=args.file,
        mapping=args.mapping,
        connector=args.source,
        until=until,
        weeks=args.weeks,
        horizons=("week", "day") if args.horizon == "both" else (args.horizon,),
        boundary=args.boundary,
        resolution=args.resolution,
        out=args.out,
    )
    try:
        outcome = run_backtest(request)
    except ValueError as exc:
        print(f"vigie: error: {exc}", file=sys.stderr)
        return 2
    for line in outcome.lines:
        print(line)
    if args.save:
        from hub.fusion.service import save_blend
        from hub.storage import open_store

        store = open_store(hub_settings(args).db)
        for params in outcome.params:
            save_blend(store, params)
        store.close()
        print(f"tuned parameters stored for the hub ({', '.join(p.horizon for p in outcome.params)})")
    return 0
