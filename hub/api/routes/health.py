"""Liveness and ingest counters."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from hub.api.deps import IngestorDep, StoreDep
from hub.api.schemas import Health
from vigie import __version__

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Is the hub alive and ingesting?")
def healthz(store: StoreDep, ingestor: IngestorDep) -> Health:
    """`ok` when the store answers and the ingest (if enabled) is connected to the broker."""
    store_ok = store.ping()
    ingest = None
    ok = store_ok
    if ingestor is not None:
        ingest = {"connected": ingestor.connected, **asdict(ingestor.stats)}
        ok = ok and ingestor.connected
    return Health(status="ok" if ok else "degraded", version=__version__, store=store_ok, ingest=ingest)
