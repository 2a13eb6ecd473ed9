"""The hub's settings: one object, read from ``VIGIE_HUB_*`` environment variables."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field

from hub.storage import Retention
from vigie.mqtt import BrokerConfig

__all__ = ["HubSettings"]


class HubSettings(BaseModel):
    """Everything the hub process needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    db: str = Field(
        default="vigie-hub.sqlite",
        description="SQLite file (WAL mode), or a PostgreSQL URL `postgresql://user@host/dbname`.",
    )
    ingest: bool = Field(default=True, description="Run the MQTT ingest inside the API process.")
    share_group: str | None = Field(
        default=None, description="MQTT v5 shared-subscription group, to split ingest across processes."
    )
    retention: Retention = Field(default_factory=Retention)
    purge_every_s: float = Field(default=3600, gt=0, description="How often the retention purge runs.")
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    client_id: str = Field(default="vigie-hub-ingest", description="MQTT client id of the ingest.")

    @classmethod
    def from_env(cls) -> HubSettings:
        """Build from ``VIGIE_HUB_DB``, ``VIGIE_HUB_INGEST``, ``VIGIE_MQTT_HOST``, ``VIGIE_MQTT_PORT``, ..."""
        env = os.environ
        broker = BrokerConfig(
            host=env.get("VIGIE_MQTT_HOST", "127.0.0.1"),
            port=int(env.get("VIGIE_MQTT_PORT", "1883")),
            username=env.get("VIGIE_MQTT_USERNAME") or None,
            password=env.get("VIGIE_MQTT_PASSWORD") or None,
        )
        return cls(
            db=env.get("VIGIE_HUB_DB", "vigie-hub.sqlite"),
            ingest=env.get("VIGIE_HUB_INGEST", "1") not in {"0", "false", "no"},
            broker=broker,
            client_id=env.get("VIGIE_HUB_CLIENT_ID", "vigie-hub-ingest"),
        )
