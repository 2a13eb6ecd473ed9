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
    "SettingsDep",
    "StoreDep",
    "get_ingestor",
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


def get_ingestor(request: Request) -> Ingestor | None:
    ingestor: Ingestor | None = request.app.state.ingestor
    return ingestor


SettingsDep = Annotated[HubSettings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
IngestorDep = Annotated[Ingestor | None, Depends(get_ingestor)]
