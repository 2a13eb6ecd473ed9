"""The FastAPI application: routers, lifespan (store and ingest), error bodies."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from hub.api.headers import SecurityHeadersMiddleware
from hub.api.routes import (
    auth,
    campaigns,
    device_tags,
    devices,
    enrol,
    events,
    exports,
    frontend,
    fusion,
    governance,
    health,
    metrics,
    renew,
    rollups,
)
from hub.audit import AuditMiddleware, require_purpose
from hub.auth import require
from hub.compact_job import CompactJob
from hub.config import HubSettings
from hub.disclosure.calendar import CityCalendar
from hub.ingest import Ingestor
from hub.live import EventWaker
from hub.login_guard import LoginGuard
from hub.metrics import MetricsMiddleware
from hub.ratelimit import RateLimiter
from hub.retention import PurgeJob
from hub.storage import open_read_store, open_store
from hub.storage.postgres import StoreUnavailableError
from hub.storage.replication import primary_durability
from vigie import __version__
from vigie.exceptions import ConfigError

__all__ = ["ErrorOut", "create_app", "mount_dashboard"]

log = logging.getLogger(__name__)
#: uvicorn's exit status for a worker that failed to start (uvicorn.config.STARTUP_FAILURE).
STARTUP_FAILURE = 3

DESCRIPTION = """
Vigie's hub API. Every event is anonymised on the device: counts of objects per
zone and time window, never images, boxes or identities.

* **events**: zone counts from every device, newest first, cursor-paginated.
* **fleet**: devices, their status and heartbeats; messages quarantined per device.
* **health**: liveness and ingest counters.
* **fusion**: the city's other data fused with the cameras' counts per zone and hour; anomalies
  against learnt baselines; short-term risk forecasts.
* **enrolment**: devices trade a one-time token and a certificate request for their certificate.

Every list pages with a cursor: follow `next` (or pass `next_cursor` as `cursor`) until it is
null. Times are accepted as ISO 8601 or UTC epoch seconds and served as both (`*_iso`).
"""


class ErrorOut(BaseModel):
    """Every error body: what went wrong, in words that say how to fix it."""

    detail: Any


def mount_dashboard(app: FastAPI) -> None:
    """The dashboard: static files served by the hub (no CDN; tiles only from the city's own server)."""
    from pathlib import Path

    from fastapi.responses import RedirectResponse
    from fastapi.staticfiles import StaticFiles

    folder = Path(__file__).resolve().parent.parent / "dashboard"
    app.mount("/dashboard", StaticFiles(directory=folder, html=True), name="dashboard")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard/")


def _settings_or_exit() -> HubSettings:
    """The settings for uvicorn's factory mode (``hub.api.main:create_app``, one call per worker).

    A wrong setting there would otherwise be a traceback per worker: say what is wrong, in the CLI's
    words, and exit with uvicorn's start-up failure status, which stops the parent instead of restarting.
    """
    try:
        return HubSettings.from_env()
    except ConfigError as exc:
        print(f"vigie: error: {exc}", file=sys.stderr)
        raise SystemExit(STARTUP_FAILURE) from None


def create_app(settings: HubSettings | None = None) -> FastAPI:
    """Build the app; with no settings, read them from the environment and config file (uvicorn factory)."""
    settings = settings or _settings_or_exit()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = open_store(settings.db, pooler=settings.db_pooler)
        # Opened after the primary, which migrates: the standby then only has to catch up.
        read_store = (
            open_read_store(settings.read_db, pooler=settings.db_pooler) if settings.read_db else store
        )
        if settings.read_db and (unsafe := primary_durability(store)):
            log.warning(unsafe)  # a standby is in use: say when it does not guard the receipts
        ingestor = (
            Ingestor(
                settings.broker,
                store,
                client_id=settings.client_id,
                share_group=settings.share_group,
                device_rate=settings.device_rate,
                device_burst=settings.device_burst,
                min_device_k=settings.min_device_k,
                jetstream=settings.ingest_jetstream,
            )
            if settings.ingest
            else None
        )
        # Every API process may run the periodic jobs: their leases in the store pick one (hub/jobs.py).
        purge = PurgeJob(store, settings.retention, settings.purge_every_s, lease_s=settings.job_lease_s)
        compaction = CompactJob(
            store, settings.compact_every_s, settings.compact_grace_s, lease_s=settings.job_lease_s
        )
        app.state.store = store
        app.state.read_store = read_store
        app.state.calendar = CityCalendar(settings.tz)
        # In the store: every worker and host takes from one bucket per token.
        burst = max(1, int(settings.rate * 4))
        app.state.rate_limiter = RateLimiter(store, "api", settings.rate, burst)
        if not settings.auth:
            log.warning("API authentication is OFF (VIGIE_HUB_AUTH=off): for closed test benches only")
        from hub.fusion.job import FusionJob, settings_zones

        app.state.zone_index = settings_zones(settings)
        state = settings.hub_state()
        app.state.enrolment = None
        crl_job = None
        if state is not None:
            from hub.broker_config import refresh_broker
            from hub.enrolment import EnrolmentService

            app.state.enrolment = EnrolmentService(store, state)
            # The CRL expires (30 days): rewrite it, and the ACL, from the registry at every start.
            refresh_broker(store, app.state.enrolment.ca, state.layout)
            from hub.crl_refresh import CrlRefresher

            # ...and again on a schedule: a quiet hub must not let it lapse (hub/crl_refresh.py).
            crl_job = CrlRefresher(store, app.state.enrolment.ca, state.layout)
            crl_job.start()
        app.state.ingestor = ingestor
        # Live streams wake on PostgreSQL's NOTIFY from whichever process stored events (hub/live.py).
        app.state.waker = EventWaker.for_store(store, live_db=settings.live_db)
        await app.state.waker.start()
        if ingestor is not None:
            ingestor.start()
        purge.start()
        compaction.start()
        # The fusion job runs where events come in: here with the in-process ingest, else in the
        # ingest processes (`vigie hub ingest`, which `vigie hub serve --workers N` starts).
        fusion_job = None
        if settings.ingest:
            fusion_job = FusionJob(
                store, app.state.zone_index, settings.fusion_every_s, k=settings.k, tz=settings.tz,
                lease_s=settings.job_lease_s,
            )  # fmt: skip
            fusion_job.start()
        from hub.campaign_service import start_service

        campaign_service = start_service(store, settings) if settings.ingest and settings.campaigns else None
        log.info("hub started", extra={"backend": store.backend, "ingest": settings.ingest})
        try:
            yield
        finally:
            if fusion_job is not None:
                fusion_job.stop()
            if campaign_service is not None:
                campaign_service.stop()
            purge.stop()
            compaction.stop()
            if crl_job is not None:
                crl_job.stop()
            if ingestor is not None:
                ingestor.stop()
            app.state.waker.stop()
            if read_store is not store:
                read_store.close()
            store.close()

    app = FastAPI(
        title="Vigie hub",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # /docs and /redoc are the hub's own pages on vendored Swagger UI and ReDoc (routes/frontend.py).
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings  # for hub.api.deps.get_settings: routes read settings only there

    @app.exception_handler(StoreUnavailableError)
    async def store_unavailable(request: Request, exc: StoreUnavailableError) -> JSONResponse:
        """A database down (a failover under way, a standby stopped): 503 and retry, not a 500."""
        log.warning("database unavailable", extra={"path": request.url.path, "error": str(exc)})
        return JSONResponse(
            {"detail": "the database is unavailable (a restart or failover under way?): retry shortly"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    app.state.login_guard = LoginGuard()  # its state is in the store, shared by every worker
    purpose = Depends(require_purpose)
    protected: dict[int | str, dict[str, Any]] = {
        401: {"description": "No token, or an invalid, expired or revoked one", "model": ErrorOut},
        403: {"description": "The caller's role lacks the route's scope", "model": ErrorOut},
        429: {"description": "Rate limit of this token reached (see Retry-After)", "model": ErrorOut},
        503: {"description": "The audit log cannot be written: nothing is served", "model": ErrorOut},
    }
    sensitive = {**protected, 400: {"description": "No purpose stated (X-Purpose)", "model": ErrorOut}}
    # Scrapes every 15 s are not a personal-data access: kept out of the audit log.
    app.add_middleware(
        AuditMiddleware,
        skip=("/healthz", "/dashboard", "/favicon.ico", "/metrics", "/static/", "/docs", "/redoc"),
    )
    app.add_middleware(MetricsMiddleware)
    # Added last, so outermost: even the audit middleware's own refusals (503) carry the headers.
    tiles = (settings.tile_origin,) if settings.tile_origin else ()
    app.add_middleware(SecurityHeadersMiddleware, img_origins=tiles)
    app.include_router(health.router)
    app.include_router(frontend.api_pages)  # static: vendored libraries and the API pages
    app.include_router(frontend.map_router, dependencies=[require("analytics:read")], responses=protected)
    app.include_router(metrics.router, dependencies=[require("fleet:read")], responses=protected)
    app.include_router(auth.router, responses={401: protected[401], 429: protected[429]})
    app.include_router(enrol.router)  # the one-time enrolment token is its credential
    app.include_router(renew.router)  # the current certificate and a request signed by its key are
    app.include_router(events.router, dependencies=[require("events:read")], responses=protected)
    app.include_router(rollups.router, dependencies=[require("events:read")], responses=protected)
    app.include_router(devices.router, dependencies=[require("fleet:read")], responses=protected)
    app.include_router(campaigns.router, dependencies=[require("fleet:read")], responses=protected)
    app.include_router(device_tags.router, dependencies=[require("fleet:read")], responses=protected)
    app.include_router(fusion.router, dependencies=[require("analytics:read"), purpose], responses=sensitive)
    app.include_router(exports.router, dependencies=[require("analytics:read"), purpose], responses=sensitive)
    app.include_router(governance.router, dependencies=[require("audit:read"), purpose], responses=sensitive)
    app.include_router(
        governance.gdpr_router, dependencies=[require("gdpr:read"), purpose], responses=sensitive
    )
    app.include_router(governance.users_router, dependencies=[require("users:write")], responses=protected)
    mount_dashboard(app)
    state = settings.hub_state()
    if state is not None:
        from fastapi.staticfiles import StaticFiles

        # The TUF repository, for devices: integrity comes from the signatures, not from this channel.
        # Only metadata/ and targets/ are served: never ota/keys.
        for part in ("metadata", "targets"):
            (state.ota / part).mkdir(parents=True, exist_ok=True)
            app.mount(f"/ota/{part}", StaticFiles(directory=state.ota / part), name=f"ota-{part}")
    return app
