"""Shared route dependencies as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from hub.ingest import Ingestor
from hub.storage import Store

__all__ = ["IngestorDep", "StoreDep"]


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_ingestor(request: Request) -> Ingestor | None:
    ingestor: Ingestor | None = request.app.state.ingestor
    return ingestor


StoreDep = Annotated[Store, Depends(get_store)]
IngestorDep = Annotated[Ingestor | None, Depends(get_ingestor)]
