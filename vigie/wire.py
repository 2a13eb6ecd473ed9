"""Wire protocol v1: the one place where a message's shape is defined.

Edge agents encode with :func:`encode`; the hub decodes with :func:`decode`.
Everything that crosses the network is one of the models below, packed with
msgpack. The schema is also the privacy whitelist: a field that is not
declared here cannot leave a device, because the agent only publishes
what :func:`encode` accepts and the hub quarantines anything else.

See ``docs/protocol.md`` for the human-readable version of this module.

Longer than 400 lines because it is the privacy whitelist: every message that may cross the
network is declared in this one file, so a reviewer (or the DPO) reads one module to know all
that can leave a device. Splitting it by message would scatter that proof.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

import msgpack
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from vigie.exceptions import WireError

__all__ = [
    "ACCEPTED_VERSIONS",
    "ALERT_GRANULARITY_S",
    "MAX_PAYLOAD_BYTES",
    "QOS",
    "RECEIPT_MAX_IDS",
    "SCHEMA_VERSION",
    "TOPIC_ROOT",
    "Alert",
    "AlertRule",
    "Channel",
    "Event",
    "Heartbeat",
    "LineCountEvent",
    "Measurement",
    "Message",
    "OtaCommand",
    "OtaState",
    "Receipt",
    "Status",
    "TopicParts",
    "ZoneCountEvent",
    "coarsen",
    "decode",
    "encode",
    "new_event_id",
    "parse_topic",
    "peek_id",
    "subscription",
    "topic",
]

#: Version 2 added ``sd_counts`` to zone counts; everything else is as in version 1.
SCHEMA_VERSION: Final = 2
#: What a hub decodes: agents not yet updated still send version 1.
ACCEPTED_VERSIONS: Final = (1, 2)
TOPIC_ROOT: Final = "vigie/v1"
#: Hard cap on one message, checked before unpacking. A zone-count event is
#: about 200 bytes; 8 KiB leaves room for 80 classes and rejects anything
#: that could carry an image.
MAX_PAYLOAD_BYTES: Final = 8192
#: Aggregation windows a device may use, in seconds. Coarse by design.
WINDOW_CHOICES: Final = (10, 15, 30, 60, 300, 900, 3600)
HEARTBEAT_GRANULARITY_S: Final = 10
ALERT_GRANULARITY_S: Final = 10
# Timestamps outside this range are clock faults, not data.
_MIN_TS: Final = 1_577_836_800  # 2020-01-01T00:00:00Z
_MAX_TS: Final = 4_102_444_800  # 2100-01-01T00:00:00Z


class Channel(StrEnum):
    """Last level of a topic: what kind of traffic it carries."""

    EVENT = "event"
    HEARTBEAT = "heartbeat"
    STATUS = "status"
    # Reserved for OTA campaigns (hub -> device notices, device -> hub progress).
    OTA = "ota"
    OTA_STATE = "ota-state"
    # Reserved for hub -> device commands.
    CMD = "cmd"
    # Hub -> device: these events are in the store (the end-to-end acknowledgement).
    RECEIPT = "receipt"


#: Delivery guarantee per channel. Events must arrive (QoS 1 + idempotent id);
#: heartbeats are superseded by the next one; status is retained and is also
#: the agent's last will.
QOS: Final[dict[Channel, int]] = {
    Channel.EVENT: 1,
    Channel.HEARTBEAT: 0,
    Channel.STATUS: 1,
    Channel.OTA: 1,
    Channel.OTA_STATE: 1,
    Channel.CMD: 1,
    # A lost receipt costs one resend, which the store drops as a duplicate and receipts again.
    Channel.RECEIPT: 0,
}

_ID_RE: Final = r"^[a-z0-9][a-z0-9-]{0,47}$"
_ZONE_RE: Final = r"^[a-z0-9][a-z0-9_-]{0,31}$"
_LABEL_RE: Final = r"^[a-z][a-z ]{0,31}$"
_ID_PATTERN: Final = re.compile(_ID_RE)

SiteId = Annotated[str, Field(pattern=_ID_RE, description="Site slug, e.g. `vieux-port`.")]
DeviceId = Annotated[str, Field(pattern=_ID_RE, description="Device slug, unique in its site.")]
ZoneId = Annotated[str, Field(pattern=_ZONE_RE, description="Zone name from the site config.")]
Label = Annotated[str, Field(pattern=_LABEL_RE, description="Class name from the model's labels.")]
EpochSeconds = Annotated[int, Field(ge=_MIN_TS, lt=_MAX_TS, description="UTC, seconds.")]


@dataclass(frozen=True, slots=True)
class TopicParts:
    """The parsed levels of a ``vigie/v1/<site>/<device>/<channel>`` topic."""

    site: str
    device: str
    channel: Channel


def topic(site: str, device: str, channel: Channel) -> str:
    """Build the topic a device publishes a channel on.

    Raises:
        WireError: when ``site`` or ``device`` is not a valid slug (this also
            keeps MQTT wildcards and separators out of topics).
    """
    for name, value in (("site", site), ("device", device)):
        if not _ID_PATTERN.match(value):
            raise WireError(
                name, f"{value!r} is not a slug: use 1-48 of a-z, 0-9 and '-', starting alphanumeric"
            )
    return f"{TOPIC_ROOT}/{site}/{device}/{channel.value}"


def subscription(channel: Channel, share_group: str | None = None) -> str:
    """Topic filter matching one channel of every device, optionally as an MQTT v5 shared subscription."""
    base = f"{TOPIC_ROOT}/+/+/{channel.value}"
    return f"$share/{share_group}/{base}" if share_group else base


def parse_topic(value: str) -> TopicParts:
    """Split a topic into site, device and channel.

    Raises:
        WireError: with field ``"<topic>"`` when the topic is not a v1 topic.
    """
    parts = value.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT:
        raise WireError("<topic>", f"{value!r} is not of the form {TOPIC_ROOT}/<site>/<device>/<channel>")
    site, device, channel = parts[2], parts[3], parts[4]
    if not _ID_PATTERN.match(site) or not _ID_PATTERN.match(device):
        raise WireError("<topic>", f"{value!r} has a site or device that is not a slug")
    try:
        return TopicParts(site, device, Channel(channel))
    except ValueError:
        known = ", ".join(c.value for c in Channel)
        raise WireError("<topic>", f"unknown channel {channel!r}; known: {known}") from None


def coarsen(ts: float, window_s: int) -> int:
    """Round a UTC timestamp down to the start of its window (seconds)."""
    return int(ts) - int(ts) % window_s


def new_event_id(window_start: int) -> str:
    """A UUIDv7 whose time part is the *window start*, not the moment of sending.

    A standard UUIDv7 embeds milliseconds, which would leak finer timing than
    the coarsened timestamp it travels with; here the 48-bit time field holds
    the window start, the rest is random, so ids stay unique and sortable.
    """
    ms = window_start * 1000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= ((rand >> 68) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # RFC 9562 variant
    value |= rand & ((1 << 62) - 1)  # rand_b, 62 bits
    return str(uuid.UUID(int=value))


def _field_error(field: str, reason: str) -> PydanticCustomError:
    # Cross-field checks have no location of their own; carry the field in the context.
    return PydanticCustomError("vigie_field", "{reason}", {"field": field, "reason": reason})


class _Message(BaseModel):
    # strict: msgpack gives exact types, so "3" is not silently an int;
    # forbid: an undeclared field is a privacy leak or a bug, never ignored.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    v: Literal[1, 2] = Field(default=SCHEMA_VERSION, description="Schema version (1 or 2).")
    site: SiteId
    device: DeviceId


def _check_id(event_id: str, seconds: int, field: str) -> None:
    try:
        parsed = uuid.UUID(event_id)
    except ValueError:
        raise _field_error("id", f"{event_id!r} is not a UUID") from None
    if parsed.version != 7 or str(parsed) != event_id:
        raise _field_error("id", f"{event_id!r} is not a canonical lower-case UUIDv7")
    if parsed.int >> 80 != seconds * 1000:
        raise _field_error("id", f"time part must equal {field} (no finer timing may leak)")


def _check_window(window_start: int, window_s: int) -> None:
    if window_s not in WINDOW_CHOICES:
        raise _field_error("window_s", f"{window_s} is not one of {WINDOW_CHOICES}")
    if window_start % window_s:
        raise _field_error("window_start", f"{window_start} is not a multiple of window_s={window_s}")


def _check_suppression(field: str, counts: dict[str, int | str], k: int) -> None:
    for label, value in counts.items():
        if isinstance(value, str) and value != f"<{k}":
            raise _field_error(f"{field}.{label}", f"{value!r} must be '<{k}' (k={k})")
        if isinstance(value, int) and 0 < value < k:
            raise _field_error(f"{field}.{label}", f"{value} is under k={k}: it must be sent as '<{k}'")


ModelRef = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,47}@[0-9A-Za-z.+-]{1,24}$")]
#: A published count: a number of objects, or ``"<k"`` when fewer than k were seen.
Count = Annotated[int, Field(ge=0, le=10_000)] | Annotated[str, Field(pattern=r"^<[1-9][0-9]?$")]
CountMap = Annotated[dict[Label, Count], Field(max_length=80)]


class _Counts(_Message):
    """Fields shared by the periodic count events."""

    id: str = Field(description="UUIDv7 whose time part is `window_start`; the hub's idempotency key.")
    window_start: EpochSeconds = Field(description="Start of the window, a multiple of `window_s`.")
    window_s: int = Field(description=f"Window length, one of {WINDOW_CHOICES} seconds.")
    k: int = Field(ge=1, le=99, description="Counts from 1 to k-1 are sent as the string '<k'.")
    noise_epsilon: float | None = Field(
        default=None, gt=0, le=100, description="When set, counts carry Laplace noise of scale 1/epsilon."
    )
    model: ModelRef = Field(description="`<model id>@<version>` that produced the counts.")


class ZoneCountEvent(_Counts):
    """Objects counted in one zone over one window."""

    kind: Literal["zone_count"] = "zone_count"
    zone: ZoneId
    frames: int = Field(ge=0, le=1_000_000, description="Frames analysed in the window.")
    counts: CountMap = Field(
        description="Peak: the most objects of each class seen at once in one frame of the window "
        "(an upper bound, not a headcount: occupancy is mean_counts)."
    )
    mean_counts: dict[Label, Annotated[float, Field(ge=0, le=10_000)]] = Field(
        max_length=80,
        description="Occupancy: mean number per analysed frame, rounded to 0.01; only unsuppressed classes.",
    )
    sd_counts: dict[Label, Annotated[float, Field(ge=0, le=10_000)]] = Field(
        default_factory=dict,
        max_length=80,
        description="Version 2: standard deviation of the per-frame number over the window, rounded to "
        "0.01, for the classes of mean_counts.",
    )

    @model_validator(mode="after")
    def _check(self) -> ZoneCountEvent:
        _check_window(self.window_start, self.window_s)
        _check_id(self.id, self.window_start, "window_start")
        _check_suppression("counts", self.counts, self.k)
        published = {label for label, v in self.counts.items() if isinstance(v, int)}
        if extra := set(self.mean_counts) - published:
            raise _field_error(
                "mean_counts", f"names {sorted(extra)}, which counts does not publish as a number"
            )
        if self.v == 1 and self.sd_counts:
            raise _field_error("sd_counts", "field not in the v1 schema (it came with v2)")
        if extra := set(self.sd_counts) - set(self.mean_counts):
            raise _field_error("sd_counts", f"names {sorted(extra)}, which mean_counts does not publish")
        return self


class LineCountEvent(_Counts):
    """Objects that crossed a line in each direction over one window."""

    kind: Literal["line_count"] = "line_count"
    line: ZoneId
    forward: CountMap = Field(description="Crossings in the line's forward direction, per class.")
    backward: CountMap = Field(description="Crossings against it, per class.")

    @model_validator(mode="after")
    def _check(self) -> LineCountEvent:
        _check_window(self.window_start, self.window_s)
        _check_id(self.id, self.window_start, "window_start")
        _check_suppression("forward", self.forward, self.k)
        _check_suppression("backward", self.backward, self.k)
        return self


#: Event families of the French decree n° 2023-828 that the agent can raise with a COCO detector.
AlertRule = Literal[
    "crowd_density", "crowd_movement", "intrusion", "wrong_way", "person_down", "abandoned_object"
]


class Alert(_Message):
    """A rule fired: what, where, when (coarsened), how much; never who."""

    kind: Literal["alert"] = "alert"
    id: str = Field(description="UUIDv7 whose time part is `ts`.")
    rule: AlertRule
    zone: ZoneId | None = Field(default=None, description="Zone the rule watches, if any.")
    line: ZoneId | None = Field(default=None, description="Line the rule watches, if any.")
    ts: EpochSeconds = Field(description=f"When it fired, coarsened to {ALERT_GRANULARITY_S} s.")
    value: float = Field(ge=0, le=1e6, description="The measure that crossed the threshold (rule-specific).")
    threshold: float = Field(ge=0, le=1e6, description="The configured threshold.")
    model: ModelRef

    @model_validator(mode="after")
    def _check(self) -> Alert:
        if self.ts % ALERT_GRANULARITY_S:
            raise _field_error("ts", f"{self.ts} is not coarsened to {ALERT_GRANULARITY_S} s")
        _check_id(self.id, self.ts, "ts")
        if (self.zone is None) == (self.line is None):
            raise _field_error("zone", "an alert names exactly one of zone or line")
        return self


#: What a sensor measures, with its unit, and which statistics a window of it may carry.
Quantity = Literal["sound_level", "temperature", "humidity", "pm1", "pm2_5", "pm10", "presence"]
UNITS: Final[dict[str, str]] = {
    "sound_level": "dB(A)", "temperature": "degC", "humidity": "%RH", "pm1": "ug/m3", "pm2_5": "ug/m3",
    "pm10": "ug/m3", "presence": "ratio",
}  # fmt: skip
STATS: Final[dict[str, frozenset[str]]] = {
    "sound_level": frozenset({"laeq", "lamax", "la90", "impulses"}),
    "presence": frozenset({"occupancy", "onsets"}),
}
_ENV_STATS: Final = frozenset({"mean", "min", "max"})
SensorId = Annotated[str, Field(pattern=_ZONE_RE, description="Sensor name from the site config.")]


class Measurement(_Message):
    """Statistics of one sensor quantity over one window: never raw samples (no audio, ever)."""

    kind: Literal["measurement"] = "measurement"
    id: str = Field(description="UUIDv7 whose time part is `window_start`.")
    sensor: SensorId
    quantity: Quantity
    unit: str = Field(max_length=8, description="Fixed per quantity (see UNITS).")
    window_start: EpochSeconds
    window_s: int
    samples: int = Field(ge=1, le=10_000_000, description="Readings (or audio blocks) in the window.")
    stats: dict[
        Annotated[str, Field(pattern=r"^[a-z0-9_]{1,16}$")], Annotated[float, Field(ge=-100, le=10_000)]
    ] = Field(max_length=8, description="Window statistics, e.g. laeq/lamax/la90 or mean/min/max.")

    @model_validator(mode="after")
    def _check(self) -> Measurement:
        _check_window(self.window_start, self.window_s)
        _check_id(self.id, self.window_start, "window_start")
        if self.unit != UNITS[self.quantity]:
            raise _field_error(
                "unit", f"{self.quantity} is measured in {UNITS[self.quantity]!r}, not {self.unit!r}"
            )
        allowed = STATS.get(self.quantity, _ENV_STATS)
        if extra := set(self.stats) - allowed:
            raise _field_error(
                "stats", f"{sorted(extra)} are not statistics of {self.quantity}: {sorted(allowed)}"
            )
        return self


class Heartbeat(_Message):
    """Device health, every few seconds; superseded by the next one."""

    kind: Literal["heartbeat"] = "heartbeat"
    ts: EpochSeconds = Field(description=f"Coarsened to {HEARTBEAT_GRANULARITY_S} s.")
    agent_version: Annotated[str, Field(max_length=24)]
    # A model reference, not free text (issue 17: markup here once reached the dashboard).
    model: ModelRef = Field(description="`<model id>@<version>` now running.")
    uptime_s: int = Field(ge=0)
    fps: float = Field(ge=0, le=1000, description="Frames analysed per second since the last heartbeat.")
    inference_p50_ms: float = Field(ge=0, le=60_000, description="Median detector latency, last period.")
    inference_p95_ms: float = Field(ge=0, le=60_000, description="95th percentile, last period.")
    cpu_percent: float = Field(ge=0, le=6400, description="The agent's CPU use (100 = one core).")
    rss_mb: float = Field(ge=0, le=1e6, description="The agent's resident memory.")
    disk_free_mb: float = Field(ge=0, le=1e9, description="Free space where the outbox lives.")
    cpu_temp_c: float | None = Field(default=None, ge=-60, le=200, description="SoC temperature (sysfs).")
    outbox_depth: int = Field(ge=0, description="Messages waiting on the device for the broker.")
    outbox_dropped: int = Field(ge=0, description="Messages dropped (oldest first) to keep the disk quota.")
    sensors: dict[SensorId, Literal["ok", "silent", "out_of_range"]] = Field(
        default_factory=dict, max_length=32, description="Health of each non-camera sensor."
    )
    problems: dict[
        Literal["broker", "certificate", "disk", "camera"], Annotated[str, Field(max_length=200)]
    ] = Field(
        default_factory=dict,
        max_length=4,
        description="What went wrong since the last heartbeat (ongoing or cleared since), in words.",
    )


class Status(_Message):
    """Retained online/offline state; `offline` is also the agent's MQTT last will."""

    kind: Literal["status"] = "status"
    ts: EpochSeconds
    state: Literal["online", "offline"]


class OtaCommand(_Message):
    """Hub to device (channel ``ota``): install a TUF target, or go back to the previous model."""

    kind: Literal["ota_command"] = "ota_command"
    ts: EpochSeconds
    campaign: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,47}$")]
    action: Literal["install", "rollback"]
    target: Annotated[str, Field(max_length=200, pattern=r"^[A-Za-z0-9._/-]+$")]
    version: Annotated[str, Field(pattern=r"^\d+\.\d+\.\d+$")]


class OtaState(_Message):
    """Device to hub (channel ``ota-state``): where an update stands on this device."""

    kind: Literal["ota_state"] = "ota_state"
    ts: EpochSeconds
    campaign: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,47}$")]
    step: Literal["received", "download", "unpack", "smoke", "switch", "confirm", "installed", "failed",
                  "rolled_back"]  # fmt: skip
    model: ModelRef | None = Field(default=None, description="Live model now (`<model id>@<version>`).")
    latency_ms: float | None = Field(default=None, ge=0, le=600_000, description="Smoke-test latency.")
    drift: float | None = Field(
        default=None, ge=0, le=1000, description="Change in detections vs the old model."
    )
    reason: Annotated[str, Field(max_length=300)] | None = None


#: Event ids per receipt: 150 UUIDs (38 packed bytes each) stay well under MAX_PAYLOAD_BYTES.
RECEIPT_MAX_IDS: Final = 150
EventId = Annotated[str, Field(min_length=36, max_length=36, pattern=r"^[0-9a-f-]{36}$")]


class Receipt(_Message):
    """Hub to device (channel ``receipt``): these events are committed to the store.

    The broker's PUBACK only says the broker has a message, and a broker keeps
    its queues in memory (a crash or a full queue drops them). The device's
    outbox therefore keeps each event until the hub's receipt names it, and
    sends it again when no receipt comes; the store drops the duplicate by id.
    """

    kind: Literal["receipt"] = "receipt"
    ts: EpochSeconds
    ids: list[EventId] = Field(max_length=RECEIPT_MAX_IDS, description="Event ids now in the store.")


Event = ZoneCountEvent | LineCountEvent | Alert | Measurement
Message = (
    ZoneCountEvent
    | LineCountEvent
    | Alert
    | Measurement
    | Heartbeat
    | Status
    | OtaCommand
    | OtaState
    | Receipt
)
_BY_KIND: Final[dict[str, type[Message]]] = {
    "zone_count": ZoneCountEvent,
    "line_count": LineCountEvent,
    "alert": Alert,
    "measurement": Measurement,
    "heartbeat": Heartbeat,
    "status": Status,
    "ota_command": OtaCommand,
    "ota_state": OtaState,
    "receipt": Receipt,
}
#: Which kinds may travel on which channel.
_CHANNEL_KINDS: Final[dict[Channel, frozenset[str]]] = {
    Channel.EVENT: frozenset({"zone_count", "line_count", "alert", "measurement"}),
    Channel.HEARTBEAT: frozenset({"heartbeat"}),
    Channel.STATUS: frozenset({"status"}),
    Channel.OTA: frozenset({"ota_command"}),
    Channel.OTA_STATE: frozenset({"ota_state"}),
    Channel.RECEIPT: frozenset({"receipt"}),
}


def encode(message: Message) -> bytes:
    """Pack a message for publishing.

    Raises:
        WireError: when the packed message exceeds :data:`MAX_PAYLOAD_BYTES`.
    """
    payload: bytes = msgpack.packb(message.model_dump(mode="python"), use_bin_type=True)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError("<payload>", f"{len(payload)} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")
    return payload


def decode(payload: bytes, channel: Channel | None = None) -> Message:
    """Unpack and validate one message.

    Args:
        payload: the raw MQTT payload.
        channel: when given, the channel it arrived on; a message of another
            kind is rejected (an event may not arrive as a heartbeat).

    Raises:
        WireError: naming the field and the reason, for oversize, malformed,
            truncated, unknown-version, wrong-type or extra-field payloads.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError("<payload>", f"{len(payload)} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")
    raw = _unpack(payload)
    if not isinstance(raw, dict):
        raise WireError("<payload>", f"expected a map at the top level, got {type(raw).__name__}")
    version = raw.get("v")
    if version is None:
        raise WireError("v", "missing schema version")
    if type(version) is not int or version not in ACCEPTED_VERSIONS:
        spoken = " and ".join(str(v) for v in ACCEPTED_VERSIONS)
        raise WireError("v", f"unknown schema version {version!r}; this hub speaks {spoken}")
    kind = raw.get("kind")
    model = _BY_KIND.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise WireError("kind", f"unknown message kind {kind!r}; known: {', '.join(_BY_KIND)}")
    if channel is not None and kind not in _CHANNEL_KINDS.get(channel, frozenset()):
        raise WireError("kind", f"a {kind!r} message may not be sent on the {channel.value!r} channel")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        # Drop pydantic's union-member tags ("constrained-int", "str") from the location.
        loc = [str(p) for p in first["loc"] if not str(p).startswith(_UNION_TAGS)]
        if loc and loc[-1] in {"int", "str", "float"} and len(loc) > 2:
            loc.pop()
        reason = first["msg"]
        if loc and loc[-1] == "[key]":  # a bad map key: name the key itself
            loc.pop()
            reason = f"bad key: {reason}"
        field = ".".join(loc) or "<payload>"
        if first["type"] == "vigie_field":
            field = first["ctx"]["field"]
        if first["type"] == "extra_forbidden":
            reason = f"field not in the v{version} schema (extra fields are refused)"
        raise WireError(field, reason) from None


def peek_id(payload: bytes) -> str | None:
    """The ``id`` of a message that failed validation, when it has a plausible one (else None).

    A quarantined event is receipted too: sending it again would only quarantine it again.
    """
    try:
        raw = _unpack(payload) if len(payload) <= MAX_PAYLOAD_BYTES else None
    except WireError:
        return None
    value = raw.get("id") if isinstance(raw, dict) else None
    if isinstance(value, str) and len(value) == 36:
        try:
            return str(uuid.UUID(value)) if str(uuid.UUID(value)) == value else None
        except ValueError:
            return None
    return None


_UNION_TAGS = ("constrained-", "function-", "lax-", "json-or-python")


def _unpack(payload: bytes) -> Any:
    limit = MAX_PAYLOAD_BYTES
    try:
        # Explicit limits stop a small payload from declaring huge containers.
        return msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            max_str_len=limit,
            max_bin_len=limit,
            max_array_len=256,
            max_map_len=256,
            max_ext_len=0,
        )
    except msgpack.ExtraData:
        raise WireError("<payload>", "trailing bytes after the message") from None
    except (ValueError, msgpack.UnpackException) as exc:
        # OutOfData (truncated), FormatError, StackError (too deep) and
        # UnicodeDecodeError are all ValueError subclasses.
        truncated = isinstance(exc, msgpack.OutOfData) or "incomplete" in str(exc)
        reason = "truncated payload" if truncated else "not valid msgpack"
        raise WireError("<payload>", f"{reason} ({type(exc).__name__})") from None
