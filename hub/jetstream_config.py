"""Settings of the hub's JetStream ingest (the ``nats`` broker backend), and the subject ↔ topic mapping.

Kept apart from :mod:`hub.jetstream_source` so that reading the hub's settings does not import
the NATS client. NATS's MQTT maps a topic's ``/`` to a subject's ``.``; the wire protocol's slugs
hold neither, so the mapping is exact both ways.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from vigie import wire

__all__ = ["INGESTED_CHANNELS", "JetStreamSettings", "stream_subjects", "subject_of", "topic_of"]

#: What the ingest stores; receipts, OTA traffic and commands never enter the stream.
INGESTED_CHANNELS = (wire.Channel.EVENT, wire.Channel.HEARTBEAT, wire.Channel.STATUS)


class JetStreamSettings(BaseModel):
    """Where the NATS cluster is and how the ingest's stream and shared consumer are shaped."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    servers: tuple[str, ...] = Field(
        default=("nats://127.0.0.1:4222",),
        min_length=1,
        description="NATS URLs of the cluster's nodes; the client fails over between them.",
    )
    user: str | None = Field(default=None, description="NATS user of the hub, when the cluster asks.")
    password: str | None = Field(default=None, description="Its password; never logged.", repr=False)
    tls_ca: Path | None = Field(
        default=None,
        description="CA that signed the nodes' certificates (the device CA's ca.crt): TLS on, node verified.",
    )
    stream: str = Field(default="VIGIE", pattern=r"^[A-Za-z0-9_-]{1,32}$", description="Stream name.")
    durable: str = Field(
        default="vigie-ingest",
        pattern=r"^[A-Za-z0-9_-]{1,32}$",
        description="Durable consumer shared by every ingest worker.",
    )
    replicas: int = Field(default=3, ge=1, le=5, description="Stream replicas (3: survives one node).")
    retention: Literal["workqueue", "limits"] = Field(
        default="workqueue", description="workqueue: a message leaves the stream once the hub acked it."
    )
    max_bytes: int = Field(
        default=1 << 30, ge=1 << 20, description="Stream size cap; past it new messages are refused."
    )
    ack_wait_s: float = Field(
        default=30.0, gt=0, description="Unacknowledged this long, a message goes to another worker."
    )
    max_ack_pending: int = Field(
        default=20_000, ge=1, description="Messages handed out and not yet acked, all workers together."
    )


def stream_subjects() -> list[str]:
    """The stream's subjects: the ingested channels of every device."""
    return [f"{wire.TOPIC_ROOT.replace('/', '.')}.*.*.{c.value}" for c in INGESTED_CHANNELS]


def topic_of(subject: str) -> str:
    """The MQTT topic a device published a subject on (``vigie.v1.s.d.event`` → ``vigie/v1/s/d/event``)."""
    return subject.replace(".", "/")


def subject_of(topic: str) -> str:
    """The subject an MQTT subscriber on ``topic`` receives (receipts to devices)."""
    return topic.replace("/", ".")
