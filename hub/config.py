"""The hub's settings: one object, defaults written once, read from the environment and a YAML file.

Precedence, highest first: arguments (the CLI's flags), ``VIGIE_HUB_<FIELD>`` variables (``__`` into
``retention`` and ``broker``: ``VIGIE_HUB_RETENTION__EVENTS_DAYS``), the older names
(``VIGIE_MQTT_HOST``, ``VIGIE_HUB_H3_RES``, … see ``hub.config_sources.LEGACY_ENV``), the YAML file
named by ``VIGIE_HUB_CONFIG`` (or ``config=``), then the defaults below. The table of every setting
in docs/configuration.md is generated from this model (``python -m hub.config_doc``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from hub.config_sources import (
    CONFIG_ENV,
    ENV_PREFIX,
    EnvNamesSource,
    YamlFileSource,
    describe_validation_error,
)
from hub.enrolment import HubState
from hub.jetstream_config import JetStreamSettings
from hub.storage import Retention
from vigie.exceptions import ConfigError
from vigie.mqtt import BrokerConfig

__all__ = ["HubSettings"]

#: Words that mean "keep forever" for a retention period given as text (an environment variable).
_FOREVER = {"forever", "none", "null", "never"}


class HubSettings(BaseSettings):
    """Everything the hub process needs."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_ignore_empty=True,  # VIGIE_HUB_STATE_DIR= means unset, as it always did
        extra="forbid",
        frozen=True,
    )
    config: Path | None = Field(
        default=None, description="YAML file of settings (keys as here; nested for retention, broker)."
    )
    db: str = Field(
        default="vigie-hub.sqlite",
        description="SQLite file (WAL mode), or a PostgreSQL URL `postgresql://user@host/dbname`.",
    )
    read_db: str | None = Field(
        default=None,
        description="PostgreSQL URL for the analysts' read-only routes (events, roll-ups, devices, fusion, "
        "exports), e.g. a streaming standby: "
        "`postgresql://vigie@standby,primary/vigie?target_session_attrs=prefer-standby`; unset: `db`.",
    )
    db_pooler: Literal["none", "pgbouncer"] = Field(
        default="none",
        description="`pgbouncer`: `db` (and `read_db`) is a PgBouncer in transaction mode; the store then "
        "keeps no session state (schema and options sent per transaction, no prepared statements).",
    )
    live_db: str | None = Field(
        default=None,
        description="PostgreSQL URL the live streams LISTEN on, straight to PostgreSQL (LISTEN needs a "
        "session, which PgBouncer in transaction mode does not keep); unset: `db`, or polling with a pooler.",
    )
    ingest: bool = Field(default=True, description="Run the MQTT ingest inside the API process.")
    share_group: str | None = Field(
        default=None, description="MQTT v5 shared-subscription group, to split ingest across processes."
    )
    retention: Retention = Field(
        default_factory=Retention, description="Days each data class is kept (`forever` or null: kept)."
    )
    purge_every_s: float = Field(default=3600, gt=0, description="How often the retention purge runs.")
    compact_every_s: float = Field(
        default=120,
        gt=0,
        description="How often recent events are packed into segments (a few minutes of them stay as "
        "one row each, ~10× the bytes).",
    )
    compact_grace_s: float = Field(
        default=120,
        ge=0,
        description="Events are packed once their window started this long ago (late ones are packed "
        "at the next run).",
    )
    fusion_every_s: float = Field(
        default=60,
        gt=0,
        description="How often camera roll-ups are folded into the cube and new hours learnt.",
    )
    job_lease_s: float = Field(
        default=30,
        gt=0,
        description="Periodic jobs (purge, compaction, fusion) run in one hub process at a time: a dead "
        "one's go to another after this long.",
    )
    broker: BrokerConfig = Field(default_factory=BrokerConfig, description="MQTT broker the ingest reads.")
    broker_backend: Literal["mosquitto", "nats"] = Field(
        default="mosquitto",
        description="mosquitto: the ingest subscribes over MQTT (one box); nats: it reads the NATS "
        "cluster's JetStream stream (`jetstream`), devices publishing over MQTT to any node.",
    )
    jetstream: JetStreamSettings = Field(
        default_factory=JetStreamSettings, description="NATS cluster and stream (with broker_backend nats)."
    )
    client_id: str = Field(default="vigie-hub-ingest", description="MQTT client id of the ingest.")
    campaigns: bool = Field(
        default=True,
        description="Drive OTA campaigns from this process (with ingest on: it needs the broker).",
    )
    campaign_lease_s: float = Field(
        default=15, gt=0, description="A dead hub's campaigns go to another hub after this long."
    )
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
    tile_url: str | None = Field(
        default=None,
        description="The city's own raster tile server for the dashboard's base map, as "
        "`https://tiles.example/{z}/{x}/{y}.png` (unset: districts only, nothing fetched from elsewhere).",
    )
    tile_attribution: str = Field(default="", description="Credit shown on the map for those tiles.")
    assets_dir: Path | None = Field(
        default=None,
        description="Folder of the front-end packages (`vigie hub assets fetch`; unset: hub/vendor/).",
    )
    h3_resolution: int = Field(default=8, ge=0, le=15, description="H3 resolution of the cube's cells.")
    controller: str = Field(default="the city (set VIGIE_HUB_CONTROLLER)", description="GDPR controller.")
    dpo_contact: str = Field(
        default="the DPO (set VIGIE_HUB_DPO)", description="DPO contact for GDPR records."
    )

    @property
    def ingest_jetstream(self) -> JetStreamSettings | None:
        """The JetStream settings when the ingest reads NATS, else None (it reads ``broker``)."""
        return self.jetstream if self.broker_backend == "nats" else None

    def hub_state(self) -> HubState | None:
        """The enrolment state folder, when configured."""
        if self.state_dir is None:
            return None
        return HubState(
            self.state_dir, broker_host=self.broker_host, tls_port=self.tls_port, tls_bind=self.tls_bind,
            local_port=self.local_port,
            broker_reload=self.broker_reload, broker_user=self.broker_user,
        )  # fmt: skip

    @field_validator("tile_url")
    @classmethod
    def _tile_template(cls, value: str | None) -> str | None:
        """An http(s) URL template with {z}, {x} and {y}: anything else would draw nothing, silently."""
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"tile_url {value!r} is not an http(s) URL; e.g. https://tiles.example/{{z}}/{{x}}/{{y}}.png"
            )
        absent = [p for p in ("{z}", "{x}", "{y}") if p not in value]
        if absent:
            raise ValueError(
                f"tile_url {value!r} lacks {', '.join(absent)}; e.g. https://tiles.example/{{z}}/{{x}}/{{y}}.png"
            )
        return value

    @property
    def tile_origin(self) -> str | None:
        """``scheme://host[:port]`` of ``tile_url``: the one outside origin for dashboard images."""
        if self.tile_url is None:
            return None
        parts = urlsplit(self.tile_url)
        return f"{parts.scheme}://{parts.netloc}"

    @model_validator(mode="after")
    def _pooler_on_postgres(self) -> HubSettings:
        """A pooler and a LISTEN URL are PostgreSQL's: on SQLite they would be ignored, silently."""
        pg = ("postgresql://", "postgres://")
        if self.live_db is not None and not self.live_db.startswith(pg):
            raise ValueError(
                f"live_db {self.live_db!r} is not a PostgreSQL URL; e.g. postgresql://vigie@db-primary:5432/vigie"
            )
        if self.db_pooler != "none" and not self.db.startswith(pg):
            raise ValueError(
                f"db_pooler is {self.db_pooler} but db {self.db!r} is SQLite: set db to the PgBouncer's "
                "postgresql:// URL, or unset db_pooler"
            )
        return self

    @model_validator(mode="after")
    def _read_db_on_postgres(self) -> HubSettings:
        """A read database is a PostgreSQL replica of a PostgreSQL ``db``: SQLite has no standby."""
        if self.read_db is None:
            return self
        pg = ("postgresql://", "postgres://")
        if not self.read_db.startswith(pg):
            raise ValueError(
                f"read_db {self.read_db!r} is not a PostgreSQL URL; e.g. "
                "postgresql://vigie@standby:5432/vigie?target_session_attrs=prefer-standby"
            )
        if not self.db.startswith(pg):
            raise ValueError(
                f"read_db is set but db {self.db!r} is SQLite, which has no standby: unset read_db, or "
                "set db to the PostgreSQL primary"
            )
        return self

    @field_validator("retention", mode="before")
    @classmethod
    def _forever(cls, value: Any) -> Any:
        """An environment variable cannot hold null: ``forever`` (or ``none``) says "keep forever"."""
        if isinstance(value, dict):
            return {k: None if isinstance(v, str) and v.lower() in _FOREVER else v for k, v in value.items()}
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments > ``VIGIE_HUB_*`` > older names > the YAML file > defaults (no .env, no secrets dir)."""
        init_kwargs: dict[str, Any] = getattr(init_settings, "init_kwargs", {})
        # Every source is read before validation: an unknown name fails before a wrong value.
        names = EnvNamesSource(settings_cls)
        config = init_kwargs.get("config") or os.environ.get(CONFIG_ENV) or None
        if config is None:
            return init_settings, env_settings, names
        return init_settings, env_settings, names, YamlFileSource(settings_cls, Path(config))

    @classmethod
    def from_env(cls, config: Path | None = None, **overrides: Any) -> HubSettings:
        """Load from the environment and the config file; ``overrides`` (CLI flags) win over both.

        Raises:
            ConfigError: an unknown variable or key, a missing file, or a wrong value; the message names
                it, the value and the fix.
        """
        init = {**overrides, **({"config": config} if config is not None else {})}
        try:
            return cls(**init)
        except ValidationError as exc:
            file = init.get("config") or os.environ.get(CONFIG_ENV) or None
            raise ConfigError(describe_validation_error(exc, init, Path(file) if file else None)) from None
        except SettingsError as exc:  # a nested model given as JSON that is not JSON
            raise ConfigError(
                f"invalid hub settings: {exc}: a whole group (VIGIE_HUB_RETENTION, VIGIE_HUB_BROKER) must be "
                "JSON such as '{\"events_days\": 30}'; or set one value: VIGIE_HUB_RETENTION__EVENTS_DAYS=30"
            ) from None
