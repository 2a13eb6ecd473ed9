"""The edge's settings from the environment: one object, each variable named and defaulted once.

A device's systemd unit sets these in ``/etc/vigie/agent.env`` (the Ansible ``agent`` role);
flags given on the command line win over them. Everything about *what* the agent counts
(sources, zones, k, windows) lives in the site file (``edge.config``), not here: these are the
few facts about *this box* (its identity on the broker, where its folders are).

A wrong value (``VIGIE_OTA_DIR=`` pointing nowhere is fine, ``VIGIE_MQTT_USERNAME`` with a
slash-less name is fine; a non-path or a value pydantic refuses is not) is a
:class:`~vigie.exceptions.ConfigError` naming the variable, its value and the fix.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from vigie.exceptions import ConfigError

__all__ = ["EdgeSettings"]


class EdgeSettings(BaseSettings):
    """``VIGIE_MQTT_USERNAME``, ``VIGIE_MQTT_PASSWORD``, ``VIGIE_MQTT_TLS_DIR``, ``VIGIE_OTA_DIR``, …"""

    # extra="ignore": VIGIE_HUB_* and the applications' VIGIE_LOG_* share the prefix; the hub
    # checks its own names (hub.config), and an edge box sets only the ones below.
    model_config = SettingsConfigDict(env_prefix="VIGIE_", env_ignore_empty=True, extra="ignore", frozen=True)

    mqtt_username: str | None = Field(default=None, description="Broker username (devices: SITE/DEVICE).")
    mqtt_password: SecretStr | None = Field(default=None, description="Broker password; never logged.")
    mqtt_tls_dir: Path | None = Field(
        default=None, description="TLS with the enrolment files there (ca.crt, device.crt, device.key)."
    )
    ota_dir: Path | None = Field(default=None, description="OTA folder: run the model of its live slot.")
    ota_repo: str | None = Field(default=None, description="The hub's TUF repository, for OTA commands.")
    model_dir: Path | None = Field(
        default=None, description="Where fetched models live (default ~/.cache/vigie/models)."
    )
    enrol_token: SecretStr | None = Field(default=None, description="One-time enrolment token.")

    @classmethod
    def load(cls) -> EdgeSettings:
        """Read the environment.

        Raises:
            ConfigError: a variable pydantic refuses, named with its value and the fix.
        """
        try:
            return cls()
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                name = "VIGIE_" + "_".join(str(p) for p in error["loc"]).upper()
                shown = "***" if "PASSWORD" in name or "TOKEN" in name else repr(error.get("input"))
                problems.append(f"{name} = {shown}: {error['msg']}")
            raise ConfigError(
                "invalid edge settings in the environment: "
                + "; ".join(problems)
                + " (fix or unset the variable; see docs/configuration.md)"
            ) from None
