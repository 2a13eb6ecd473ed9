"""Shared route dependencies as ``Annotated`` aliases: routes get the settings, store and ingest here."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from hub.config import HubSettings
from hub.ingest import Ingestor
from hub.storage import Store

__all__ = [
    "EPOCH_MAX",
    "EpochQuery",
    "IngestorDep",
    "SettingsDep",
    "StoreDep",
    "get_ingestor",
    "get_settings",
    "get_store",
]

#: Times are UTC epoch seconds up to the year 2100: bounded, so that no query overflows the store.
EPOCH_MAX = 4_102_444_800


def get_settings(request: Request) -> HubSettings:
    """The settings the app was built with (``create_app``): the one way routes read a setting."""
    settings: HubSettings = request.app.state.settings
    return settings


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_ingestor(request: Request) -> Ingestor | None:
    ingestor: Ingestor | None = request.app.state.ingestor
    return ingestor


SettingsDep = Annotated[HubSettings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
IngestorDep = Annotated[Ingestor | None, Depends(get_ingestor)]
EpochQuery = Annotated[int | None, Query(ge=0, le=EPOCH_MAX, description="UTC epoch seconds.")]
