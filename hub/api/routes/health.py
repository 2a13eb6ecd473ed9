"""Liveness and ingest counters."""

from __future__ import annotations

import time
from dataclasses import asdict

from fastapi import APIRouter

from hub.api.deps import IngestorDep, StoreDep
from hub.api.schemas import Health
from vigie import __version__

__all__ = ["healthz", "router"]

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
    else:
        # Separate ingest processes (`hub serve --ingest-workers N`, `hub ingest`) report through the store.
        workers = store.list_ingest_status() if store_ok else []
        if workers:
            now = time.time()
            fresh = [w for w in workers if now - w["updated_at"] < 30]
            ingest = {"connected": any(w["connected"] for w in fresh), "workers": workers}
            ok = ok and bool(ingest["connected"])
    return Health(status="ok" if ok else "degraded", version=__version__, store=store_ok, ingest=ingest)
