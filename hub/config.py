"""The hub's settings: one object, read from ``VIGIE_HUB_*`` environment variables."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from hub.enrolment import HubState
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
    fusion_every_s: float = Field(
        default=60,
        gt=0,
        description="How often camera roll-ups are folded into the cube and new hours learnt.",
    )
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    client_id: str = Field(default="vigie-hub-ingest", description="MQTT client id of the ingest.")
    state_dir: Path | None = Field(
        default=None, description="Folder from `vigie hub init` (device CA, OTA repository, broker files)."
    )
    broker_host: str = Field(default="localhost", description="Broker host name devices connect to (TLS).")
    tls_port: int = Field(default=8883, ge=1, le=65535, description="Broker TLS port for devices.")
    tls_bind: str = Field(default="0.0.0.0", description="Address the broker's TLS listener binds.")
    local_port: int = Field(default=1884, ge=1, le=65535, description="Broker's loopback port for the hub.")
    broker_reload: str | None = Field(
        default=None, description="Command that reloads the broker (default: SIGHUP to its pid file)."
    )
    broker_user: str | None = Field(default=None, description="Account the broker runs as (its `user`).")
    auth: bool = Field(default=True, description="Require bearer tokens (off only for closed test benches).")
    k: int = Field(default=5, ge=3, description="Aggregates under k are suppressed in every API answer.")
    min_device_k: int = Field(
        default=3, ge=1, description="Events counted on a device with a smaller k are quarantined."
    )
    tz: str = Field(
        default="Europe/Paris", description="The city's time zone: days, ISO weeks and months start there."
    )
    token_ttl_s: float = Field(default=8 * 3600, gt=0, description="Lifetime of a login token.")
    rate: float = Field(default=20.0, gt=0, description="Requests per second per token (burst 4× that).")
    device_rate: float = Field(
        default=100.0, gt=0, description="MQTT messages per second per device on ingest (excess not stored)."
    )
    device_burst: int = Field(default=10_000, ge=1, description="Messages a device may send in one burst.")
    zones: Path | None = Field(default=None, description="GeoJSON of named areas (quartiers) for maps.")
    zones_name: str = Field(default="nom_qua", description="Its property holding each area's name.")
    h3_resolution: int = Field(default=8, ge=0, le=15, description="H3 resolution of the cube's cells.")
    controller: str = Field(default="the city (set VIGIE_HUB_CONTROLLER)", description="GDPR controller.")
    dpo_contact: str = Field(
        default="the DPO (set VIGIE_HUB_DPO)", description="DPO contact for GDPR records."
    )

    def hub_state(self) -> HubState | None:
        """The enrolment state folder, when configured."""
        if self.state_dir is None:
            return None
        return HubState(
            self.state_dir, broker_host=self.broker_host, tls_port=self.tls_port, tls_bind=self.tls_bind,
            local_port=self.local_port,
            broker_reload=self.broker_reload, broker_user=self.broker_user,
        )  # fmt: skip

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
            state_dir=Path(env["VIGIE_HUB_STATE_DIR"]) if env.get("VIGIE_HUB_STATE_DIR") else None,
            broker_host=env.get("VIGIE_HUB_BROKER_HOST", "localhost"),
            tls_port=int(env.get("VIGIE_HUB_TLS_PORT", "8883")),
            tls_bind=env.get("VIGIE_HUB_TLS_BIND", "0.0.0.0"),
            local_port=int(env.get("VIGIE_HUB_LOCAL_PORT", "1884")),
            broker_reload=env.get("VIGIE_HUB_BROKER_RELOAD") or None,
            broker_user=env.get("VIGIE_HUB_BROKER_USER") or None,
            auth=env.get("VIGIE_HUB_AUTH", "on").lower() not in {"off", "0", "false", "no"},
            k=int(env.get("VIGIE_HUB_K", "5")),
            min_device_k=int(env.get("VIGIE_HUB_MIN_DEVICE_K", "3")),
            tz=env.get("VIGIE_HUB_TZ", "Europe/Paris"),
            fusion_every_s=float(env.get("VIGIE_HUB_FUSION_EVERY", "60")),
            token_ttl_s=float(env.get("VIGIE_HUB_TOKEN_TTL", str(8 * 3600))),
            rate=float(env.get("VIGIE_HUB_RATE", "20")),
            device_rate=float(env.get("VIGIE_HUB_DEVICE_RATE", "100")),
            device_burst=int(env.get("VIGIE_HUB_DEVICE_BURST", "10000")),
            zones=Path(env["VIGIE_HUB_ZONES"]) if env.get("VIGIE_HUB_ZONES") else None,
            zones_name=env.get("VIGIE_HUB_ZONES_NAME", "nom_qua"),
            h3_resolution=int(env.get("VIGIE_HUB_H3_RES", "8")),
            controller=env.get("VIGIE_HUB_CONTROLLER", "the city (set VIGIE_HUB_CONTROLLER)"),
            dpo_contact=env.get("VIGIE_HUB_DPO", "the DPO (set VIGIE_HUB_DPO)"),
        )
