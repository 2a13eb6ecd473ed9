"""Broker connection settings shared by the agent and the hub (paho-mqtt 2)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

__all__ = ["BrokerConfig", "make_client"]


class BrokerConfig(BaseModel):
    """Where the MQTT broker is and how to talk to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str = Field(default="127.0.0.1", description="Broker host name or address.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker TCP port.")
    username: str | None = Field(default=None, description="Per-device or hub user, when the broker asks.")
    password: str | None = Field(default=None, description="Its password; never logged.", repr=False)
    keepalive: int = Field(default=30, ge=5, le=3600, description="Seconds between pings.")
    protocol: Literal["3.1.1", "5"] = Field(
        default="3.1.1", description="MQTT version; 5 is needed for shared subscriptions."
    )
    tls_ca: Path | None = Field(default=None, description="CA certificate that signed the broker's (TLS on).")
    tls_cert: Path | None = Field(default=None, description="This client's certificate (from enrolment).")
    tls_key: Path | None = Field(default=None, description="Its private key (0600, never leaves the device).")
    failover: tuple[str, ...] = Field(
        default=(),
        description="Other nodes of the same broker cluster, as host:port, tried in turn after `host` "
        "when the current one is lost or unreachable (the agent's link; NATS cluster).",
    )

    @field_validator("failover")
    @classmethod
    def _host_ports(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"failover address {item!r} is not host:port; e.g. 10.0.0.2:1883")
        return value

    def addresses(self) -> list[tuple[str, int]]:
        """Where to connect, in order of preference: ``host:port``, then each ``failover`` node."""
        out = [(self.host, self.port)]
        for item in self.failover:
            host, _, port = item.rpartition(":")
            out.append((host, int(port)))
        return out

    def with_tls_dir(self, folder: Path) -> BrokerConfig:
        """TLS with the files enrolment writes: ``ca.crt``, ``device.crt``, ``device.key`` in ``folder``."""
        return self.model_copy(
            update={
                "tls_ca": folder / "ca.crt",
                "tls_cert": folder / "device.crt",
                "tls_key": folder / "device.key",
            }
        )


def make_client(
    config: BrokerConfig, client_id: str, *, clean_session: bool = True, manual_ack: bool = False
) -> mqtt.Client:
    """A paho client configured from ``config``; not yet connected."""
    # Imported here so that the wire protocol stays usable without paho installed.
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    v5 = config.protocol == "5"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=None if v5 else clean_session,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        manual_ack=manual_ack,
    )
    if config.username:
        client.username_pw_set(config.username, config.password)
    if config.tls_ca is not None:
        # The broker's certificate is checked against our CA (and its host name); the client
        # certificate, when present, is our identity: its CN is our MQTT username.
        client.tls_set(
            ca_certs=str(config.tls_ca),
            certfile=str(config.tls_cert) if config.tls_cert else None,
            keyfile=str(config.tls_key) if config.tls_key else None,
        )
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client
