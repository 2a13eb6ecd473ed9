"""``vigie hub …``: the group, and the processes that run the hub (``serve``, ``ingest``).

The other hub actions live beside it: identity (:mod:`vigie.cli.hub_fleet`), city data
(:mod:`vigie.cli.fusion`), users and records (:mod:`vigie.cli.access`).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from vigie.cli import access, fusion, hub_assets, hub_fleet
from vigie.cli.options import FMT, add_broker_options, add_db, add_hub_config, broker_config, hub_settings
from vigie.exceptions import ConfigError

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``vigie hub`` and its actions."""
    hub = sub.add_parser(
        "hub",
        help="The hub.",
        description="The hub: ingest and store, enrolment, city data fusion and learning, users and audit, "
        "the REST API and the dashboard.",
    )
    hub_sub = hub.add_subparsers(dest="hub_command", metavar="ACTION", required=True)
    _register_serve(hub_sub)
    _register_ingest(hub_sub)
    hub_fleet.register(hub_sub)
    fusion.register(hub_sub)
    access.register(hub_sub)
    hub_assets.register(hub_sub)


def _register_serve(hub_sub: Any) -> None:
    serve = hub_sub.add_parser(
        "serve",
        formatter_class=FMT,
        help="Run the REST API with the MQTT ingest.",
        description="Serve the REST API under uvicorn and ingest events from the broker into SQLite.\n"
        "API docs (OpenAPI) at http://HOST:PORT/docs.",
        epilog="Example:\n  vigie hub serve --db hub.sqlite --broker 127.0.0.1:1883 --port 8000\n",
    )
    serve.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
    serve.add_argument("--port", type=int, default=8000, help="Port (default 8000).")
    add_db(serve)
    add_hub_config(serve)
    add_broker_options(serve, "MQTT broker to ingest from")
    serve.add_argument("--no-ingest", action="store_true", help="Serve the API only.")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="API worker processes (2 cut p99 latency on 2 cores; default 1).",
    )
    serve.add_argument(
        "--ingest-workers",
        type=int,
        default=1,
        help="Ingest processes sharing the stream through an MQTT 5 shared subscription (default 1).",
    )
    serve.set_defaults(handler=_serve)


def _register_ingest(hub_sub: Any) -> None:
    ingest = hub_sub.add_parser(
        "ingest",
        formatter_class=FMT,
        help="Run ingest workers only (scale out by adding processes).",
        description="Ingest events from the broker into the store, without the API. With --workers N, N "
        "processes share the stream through the MQTT 5 shared subscription $share/GROUP/vigie/v1/+/+/…; "
        "run more of them, on more machines, against the same PostgreSQL to grow past one machine.",
        epilog="Example:\n  vigie hub ingest --db postgresql://vigie@db/vigie --broker mq:1883 --workers 2\n",
    )
    add_db(ingest)
    add_hub_config(ingest)
    add_broker_options(ingest, "MQTT broker to ingest from")
    ingest.add_argument("--workers", type=int, default=1, help="Ingest processes (default 1).")
    ingest.add_argument("--group", default="vigie-hub", help="Shared-subscription group (default vigie-hub).")
    ingest.add_argument("--client-id", default="vigie-hub-ingest", help="MQTT client id prefix.")
    ingest.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    ingest.add_argument(
        "--retire",
        action="store_true",
        help="Scale down: with --worker-index K, drain worker K's queued session, then end it for good.",
    )
    ingest.set_defaults(handler=_ingest)


# -- handlers ---------------------------------------------------------------------------------
def _check_tls(args: argparse.Namespace) -> None:
    """Refuse TLS settings the ingest cannot honour before spawning processes that would each fail."""
    from hub.mqtt_tls import tls_context

    tls_context(broker_config(args))


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from hub.api.main import create_app

    settings = hub_settings(args)
    db = settings.db
    scaled = args.workers > 1 or args.ingest_workers > 1
    if not args.no_ingest:
        _check_tls(args)
    if settings.zones is not None:  # a bad zones file: one line now, not a traceback from uvicorn's startup
        from hub.fusion.zones import load_geojson

        try:
            load_geojson(settings.zones, settings.zones_name)
        except ValueError as exc:
            raise ConfigError(f"{exc} (VIGIE_HUB_ZONES or zones: in the hub's settings)") from None
    if settings.read_db is not None:  # unreachable: one line now, not a traceback per worker
        from hub.storage.readonly import check_reachable

        check_reachable(settings.read_db, pooler=settings.db_pooler)
    print(f"vigie hub: API on http://{args.host}:{args.port}/v1/events (docs at /docs)", file=sys.stderr)
    if not scaled:
        settings = settings.model_copy(update={"ingest": not args.no_ingest, "broker": broker_config(args)})
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_config=None, access_log=False)
        return 0
    # Several processes: the API workers only read; separate ingest processes share the stream.
    ingest = None
    if not args.no_ingest:
        ingest = subprocess.Popen([
            sys.executable, "-m", "vigie", "--log-level", args.log_level, "--log-format", args.log_format,
            "hub", "ingest", "--db", db, "--broker", f"{args.broker[0]}:{args.broker[1]}",
            "--workers", str(args.ingest_workers),
            *(["--mqtt-username", args.mqtt_username] if args.mqtt_username else []),
            *(["--mqtt-password-file", str(args.mqtt_password_file)] if args.mqtt_password_file else []),
            *(["--mqtt-tls-dir", str(args.mqtt_tls_dir)] if args.mqtt_tls_dir else []),
        ])  # fmt: skip
    os.environ.update({"VIGIE_HUB_DB": db, "VIGIE_HUB_INGEST": "0"})
    try:
        uvicorn.run(
            "hub.api.main:create_app", factory=True, host=args.host, port=args.port, workers=args.workers,
            log_config=None, access_log=False,
        )  # fmt: skip
    finally:
        if ingest is not None:
            ingest.terminate()
            ingest.wait(timeout=20)
    return 0


def _spawn_ingest_workers(args: argparse.Namespace, db: str) -> int:
    """The parent: start one process per worker and wait; SIGTERM reaches them all."""
    base = [sys.executable, "-m", "vigie", "--log-level", args.log_level, "--log-format", args.log_format,
            "hub", "ingest", "--db", db, "--broker", f"{args.broker[0]}:{args.broker[1]}",
            "--group", args.group, "--client-id", args.client_id]  # fmt: skip
    if args.mqtt_username:
        base += ["--mqtt-username", args.mqtt_username]
    if args.mqtt_password_file:
        base += ["--mqtt-password-file", str(args.mqtt_password_file)]
    if args.mqtt_tls_dir:
        base += ["--mqtt-tls-dir", str(args.mqtt_tls_dir)]
    _check_tls(args)
    children = [subprocess.Popen([*base, "--worker-index", str(i)]) for i in range(args.workers)]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(1.0):
        if any(c.poll() is not None for c in children):
            break
    for c in children:
        if c.poll() is None:
            c.terminate()
    return max((c.wait(timeout=30) or 0) for c in children)


def _campaign_service(store: Any, settings: Any, broker: Any) -> Any:
    from hub.campaign_service import start_service

    return start_service(store, settings.model_copy(update={"broker": broker}))


def _fusion_job(store: Any, settings: Any) -> Any:
    from hub.fusion.job import FusionJob

    try:
        job = FusionJob.for_settings(store, settings)
    except ValueError as exc:  # a bad zones file
        raise ConfigError(f"{exc} (VIGIE_HUB_ZONES or zones: in the hub's settings)") from None
    return job


def _ingest(args: argparse.Namespace) -> int:
    from hub.ingest import Ingestor
    from hub.storage import open_store

    settings = hub_settings(args)
    if args.worker_index is None and args.workers > 1:
        return _spawn_ingest_workers(args, settings.db)
    shared = args.workers > 1 or args.worker_index is not None
    broker = broker_config(args, protocol="5" if shared else "3.1.1")
    index = args.worker_index or 0
    store = open_store(settings.db, pooler=settings.db_pooler)
    # Scaled out, the fusion job runs here, in one process of all those on the store (its lease,
    # hub/jobs.py); built first, so a bad zones file stops the process before it ingests.
    fusion = None if args.retire else _fusion_job(store, settings)
    ingestor = Ingestor(
        broker, store, client_id=f"{args.client_id}-{index}", share_group=args.group if shared else None,
        device_rate=settings.device_rate, device_burst=settings.device_burst,
        min_device_k=settings.min_device_k, jetstream=settings.ingest_jetstream,
    )  # fmt: skip
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.retire:
        ingestor.start_retiring()
        ingestor.wait_connected(30)
        time.sleep(5.0)  # take what the broker queued for this worker's session
    else:
        ingestor.start()
        # Scaled out (`vigie hub serve --workers`), the API workers have no broker: campaigns run
        # here, one runner per campaign across every worker and host (hub/campaign_service.py).
        campaigns = _campaign_service(store, settings, broker) if settings.campaigns else None
        if fusion is not None:
            fusion.start()
        stop.wait()
        if fusion is not None:
            fusion.stop()
        if campaigns is not None:
            campaigns.stop()
    ingestor.stop(retire=args.retire)
    store.close()
    return 0
