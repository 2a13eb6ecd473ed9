"""The FastAPI application: routers, lifespan (store and ingest), error bodies."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from hub.api.routes import devices, enrol, events, fusion, health, rollups
from hub.config import HubSettings
from hub.ingest import Ingestor
from hub.retention import PurgeJob
from hub.storage import open_store
from vigie import __version__

__all__ = ["create_app"]

log = logging.getLogger(__name__)

DESCRIPTION = """
Vigie's hub API. Every event is anonymised on the device: counts of objects per
zone and time window, never images, boxes or identities.

* **events**: zone counts from every device, newest first, cursor-paginated.
* **fleet**: devices, their status and heartbeats; messages quarantined per device.
* **health**: liveness and ingest counters.
* **fusion**: the city's other data fused with the cameras' counts per zone and hour; anomalies
  against learnt baselines; short-term risk forecasts.
* **enrolment**: devices trade a one-time token and a certificate request for their certificate.
"""


def create_app(settings: HubSettings | None = None) -> FastAPI:
    """Build the app; with no settings, read them from the environment (uvicorn factory)."""
    settings = settings or HubSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = open_store(settings.db)
        ingestor = (
            Ingestor(settings.broker, store, client_id=settings.client_id, share_group=settings.share_group)
            if settings.ingest
            else None
        )
        purge = PurgeJob(store, settings.retention, settings.purge_every_s)
        app.state.store = store
        state = settings.hub_state()
        app.state.enrolment = None
        if state is not None:
            from hub.broker_config import refresh_broker
            from hub.enrolment import EnrolmentService

            app.state.enrolment = EnrolmentService(store, state)
            # The CRL expires (30 days): rewrite it, and the ACL, from the registry at every start.
            refresh_broker(store, app.state.enrolment.ca, state.layout)
        app.state.ingestor = ingestor
        if ingestor is not None:
            ingestor.start()
        purge.start()
        log.info("hub started", extra={"backend": store.backend, "ingest": settings.ingest})
        try:
            yield
        finally:
            purge.stop()
            if ingestor is not None:
                ingestor.stop()
            store.close()

    app = FastAPI(
        title="Vigie hub",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.include_router(health.router)
    app.include_router(events.router)
    app.include_router(devices.router)
    app.include_router(rollups.router)
    app.include_router(enrol.router)
    app.include_router(fusion.router)
    return app
