"""Shared route dependencies as ``Annotated`` aliases: routes get the settings, store and ingest here."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from hub.api.times import EPOCH_MAX
from hub.config import HubSettings
from hub.ingest import Ingestor
from hub.storage import Store

__all__ = [
    "EPOCH_MAX",
    "IngestorDep",
    "ReadStoreDep",
    "SettingsDep",
    "StoreDep",
    "get_ingestor",
    "get_read_store",
    "get_settings",
    "get_store",
]


def get_settings(request: Request) -> HubSettings:
    """The settings the app was built with (``create_app``): the one way routes read a setting."""
    settings: HubSettings = request.app.state.settings
    return settings


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_read_store(request: Request) -> Store:
    """The store for routes that only read: a standby when ``read_db`` is set, else the store itself."""
    store: Store = request.app.state.read_store
    return store


def get_ingestor(request: Request) -> Ingestor | None:
    ingestor: Ingestor | None = request.app.state.ingestor
    return ingestor


SettingsDep = Annotated[HubSettings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
#: Analysts' reads (events, roll-ups, devices, fusion, exports): never a write through this one.
ReadStoreDep = Annotated[Store, Depends(get_read_store)]
IngestorDep = Annotated[Ingestor | None, Depends(get_ingestor)]
