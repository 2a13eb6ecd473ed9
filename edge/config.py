"""The agent's configuration: pydantic models, and loading from ``firmware_configs/``.

A running agent is described by one :class:`AgentConfig`. It is built either
from command-line flags, or from a *site file* (cameras, zones, lines, rules,
anonymisation) merged over the camera's *hardware profile* (runtime, threads,
frame-rate cap, budgets). Every error names the file, the key and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge.anonymise import AnonymisationConfig
from edge.rules import UNSUPPORTED_RULES, Rule
from edge.sensors.config import SensorConfig
from edge.zones import FULL_FRAME, Line, Zone
from vigie.exceptions import ConfigError
from vigie.firmware import profiles_dir
from vigie.mqtt import BrokerConfig
from vigie.wire import WINDOW_CHOICES

__all__ = [
    "DEFAULT_CLASSES",
    "AgentConfig",
    "Budgets",
    "CameraConfig",
    "HardwareProfile",
    "SiteConfig",
    "Thermal",
    "detection_settings",
    "format_validation_error",
    "load_agent_config",
    "load_camera",
    "load_profile",
]

#: What a street camera counts by default: people, vehicles and unattended bags.
DEFAULT_CLASSES = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "bus",
    "truck",
    "backpack",
    "handbag",
    "suitcase",
)
PROFILES_DIR = profiles_dir()
#: A detector score threshold.
Score = Annotated[float, Field(gt=0, lt=1)]
_SLUG = r"^[a-z0-9][a-z0-9-]{0,47}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Thermal(_Strict):
    throttle_c: float = Field(
        default=80.0, description="Above this SoC temperature the agent halves its rate."
    )


class Budgets(_Strict):
    rss_mb: int = Field(default=250, ge=64, description="Memory the agent may use.")
    outbox_mb: int = Field(
        default=256, ge=1, description="Disk quota of the outbox; oldest events dropped past it."
    )


class HardwareProfile(_Strict):
    """What a kind of box can do: `firmware_configs/profiles/<name>.yaml`."""

    name: str = Field(pattern=_SLUG)
    description: str
    arch: Literal["aarch64", "x86_64"]
    camera_stack: Literal["picamera2", "v4l2", "rtsp", "file"] = Field(description="Default capture path.")
    runtime: Literal["auto", "litert", "tflite-runtime"] = "auto"
    delegate: Literal["none", "edgetpu"] = Field(
        default="none", description="Accelerator delegate, if fitted."
    )
    threads: int = Field(default=2, ge=1, le=16)
    fps_cap: float = Field(default=5.0, gt=0, description="Frames analysed per second at most.")
    inference_ms: float | None = Field(
        default=None,
        gt=0,
        description="Milliseconds one detector pass takes on this box at its thread count; "
        "with fps_cap and tiles it bounds what a camera may ask (`vigie config validate`).",
    )
    resolution: tuple[int, int] = Field(default=(1280, 720), description="Capture width and height.")
    thermal: Thermal = Field(default_factory=Thermal)
    budgets: Budgets = Field(default_factory=Budgets)


class AgentConfig(_Strict):
    """Everything one agent process needs; unknown keys are errors."""

    site: str = Field(pattern=_SLUG, description="Site slug, e.g. `vieux-port`.")
    device: str = Field(pattern=_SLUG, description="This device's slug.")
    source: str = Field(
        description="Video file, image, folder of images, rtsp://…, http(s)://…, /dev/videoN or picamera2:N."
    )
    loop: bool = Field(default=False, description="Replay a file source forever.")
    realtime: bool = Field(default=False, description="Pace a video file at its own frame rate.")
    fps_cap: float | None = Field(
        default=None, gt=0, description="Analyse at most this many frames a second."
    )
    resolution: tuple[int, int] | None = Field(default=None, description="Camera capture size (w, h).")
    model: str = Field(default="ssd_mobilenet_v2_coco_quant", description="Model folder under models/.")
    model_dir: Path | None = Field(default=None, description="Folder holding the model files.")
    ota_dir: Path | None = Field(
        default=None,
        description="OTA folder (`vigie edge update`): when it holds a live slot, the model comes from it.",
    )
    ota_repo: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="The hub's TUF repository (`https://hub/ota`): with ota_dir, the agent takes OTA "
        "campaign commands on its own connection. Default: the enrolment's hub URL + /ota.",
    )
    runtime: Literal["auto", "litert", "tflite-runtime"] = "auto"
    delegate: Literal["none", "edgetpu"] = "none"
    threads: int = Field(default=2, ge=1, le=16, description="Detector threads.")
    tiles: int = Field(default=1, ge=1, le=4, description="Split each frame into N×N tiles (dense scenes).")
    classes: tuple[str, ...] = Field(default=DEFAULT_CLASSES, description="Classes to count and track.")
    thresholds: dict[str, Score] = Field(
        default_factory=dict,
        description="Per-class score thresholds, e.g. {person: 0.45}; over the model manifest's.",
    )
    letterbox: bool = Field(
        default=False, description="Pad the frame to a square instead of stretching it to the model's input."
    )
    zones: tuple[Zone, ...] = Field(default=(FULL_FRAME,), description="Zones to count in.")
    lines: tuple[Line, ...] = Field(default=(), description="Directed counting lines.")
    rules: tuple[Rule, ...] = Field(default=(), description="Event rules (see edge/rules.py).")
    sensors: tuple[SensorConfig, ...] = Field(default=(), description="Non-camera sensors beside the camera.")
    impulse_db: float = Field(default=10.0, gt=0, description="Impulsive noise: dB above the running L_A90.")
    anonymisation: AnonymisationConfig = Field(default_factory=AnonymisationConfig)
    heartbeat_s: float = Field(default=10.0, gt=0, description="Seconds between heartbeats.")
    outbox: Path = Field(default=Path("vigie-outbox.sqlite"), description="Durable outbox file.")
    outbox_quota_mb: float = Field(
        default=256, gt=0, description="Outbox disk quota; oldest dropped past it."
    )
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    drain_timeout_s: float = Field(
        default=30.0, ge=0, description="At the end of a finite source, wait for the broker."
    )
    resend_after_s: float = Field(
        default=30.0,
        ge=1,
        le=600,
        description="Publish an event again when the hub has not receipted it after this many seconds"
        " (the wait doubles, up to 10 min, while the hub stays silent).",
    )
    throttle_c: float | None = Field(
        default=None, description="Above this SoC temperature the agent halves its frame rate."
    )
    snapshot_dir: Path = Field(
        default=Path("vigie-snapshots"), description="Calibration snapshots (local only)."
    )
    snapshot_ttl_s: float = Field(default=3600, gt=0, description="Snapshots are deleted after this long.")

    @model_validator(mode="after")
    def _check(self) -> AgentConfig:
        if self.anonymisation.window_s not in WINDOW_CHOICES:
            raise ValueError(
                f"anonymisation.window_s={self.anonymisation.window_s} must be one of {WINDOW_CHOICES}"
            )
        for kind, names in (("zone", [z.name for z in self.zones]), ("line", [ln.name for ln in self.lines])):
            if len(set(names)) != len(names):
                raise ValueError(f"{kind} names must be unique, got {names}")
        zones, lines = {z.name for z in self.zones}, {ln.name for ln in self.lines}
        for rule in self.rules:
            place = getattr(rule, "zone", None)
            if place is not None and place not in zones:
                raise ValueError(f"rule {rule.type} names zone {place!r}; configured zones: {sorted(zones)}")
            place = getattr(rule, "line", None)
            if place is not None and place not in lines:
                raise ValueError(f"rule {rule.type} names line {place!r}; configured lines: {sorted(lines)}")
        return self


class CameraConfig(_Strict):
    """One camera of a site file: which box, which stream, what to watch."""

    device: str = Field(pattern=_SLUG)
    profile: str = Field(pattern=_SLUG, description="Hardware profile name under firmware_configs/profiles/.")
    source: str
    loop: bool = False
    realtime: bool = False
    fps_cap: float | None = Field(default=None, gt=0, description="Overrides the profile's.")
    threads: int | None = Field(default=None, ge=1, le=16, description="Overrides the profile's.")
    tiles: int = Field(default=1, ge=1, le=4)
    thresholds: dict[str, Score] = Field(default_factory=dict, description="Per-class score thresholds.")
    letterbox: bool = False
    classes: tuple[str, ...] = DEFAULT_CLASSES
    zones: tuple[Zone, ...] = (FULL_FRAME,)
    lines: tuple[Line, ...] = ()
    rules: tuple[dict[str, Any], ...] = Field(default=(), description="Validated as rules once merged.")
    sensors: tuple[SensorConfig, ...] = ()


class SiteConfig(_Strict):
    """A site file: `firmware_configs/sites/<site>.yaml`."""

    site: str = Field(pattern=_SLUG)
    description: str = ""
    location: tuple[float, float] | None = Field(default=None, description="(lat, lon) of the site, WGS84.")
    tags: tuple[str, ...] = ()
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    anonymisation: AnonymisationConfig = Field(default_factory=AnonymisationConfig)
    cameras: tuple[CameraConfig, ...] = Field(min_length=1)


def detection_settings(config: AgentConfig) -> tuple[object, ...]:
    """What the detector is built with beyond the model and runtime: a change rebuilds it on reload."""
    return (tuple(sorted(config.thresholds.items())), config.letterbox)


def format_validation_error(exc: ValidationError, source: str) -> str:
    """Pydantic's errors as `file: key: problem (fix)` lines."""
    errors = exc.errors(include_url=False)
    # A list whose items failed is also reported "too short" (no valid item left): one problem, one line.
    inner = {tuple(e["loc"][:i]) for e in errors for i in range(1, len(e["loc"]))}
    errors = [e for e in errors if not (e["type"] == "too_short" and tuple(e["loc"]) in inner)]
    lines = [f"{source}: {len(errors)} error(s)"]
    for err in errors:
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        fix = ""
        if err["type"] == "extra_forbidden":
            fix = " (remove it, or check its spelling against docs/configuration.md)"
        elif err["type"] == "missing":
            fix = " (add it)"
        elif err["type"] == "string_pattern_mismatch":
            fix = " (use lower-case letters, digits and '-')"
        lines.append(f"  {key}: {err['msg']}{fix}")
    return "\n".join(lines)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return data


def load_profile(name: str, profiles_dir: Path = PROFILES_DIR) -> HardwareProfile:
    """Load `<profiles_dir>/<name>.yaml`.

    Raises:
        ConfigError: naming the file and each bad key.
    """
    path = profiles_dir / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in profiles_dir.glob("*.yaml"))
        raise ConfigError(f"hardware profile {name!r} not found in {profiles_dir}; known: {', '.join(known)}")
    try:
        return HardwareProfile.model_validate(_read_yaml(path))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from None


def load_camera(
    site_file: Path, device: str, profiles_dir: Path = PROFILES_DIR
) -> tuple[CameraConfig, HardwareProfile]:
    """One camera's entry of a site file and its hardware profile, as written (not merged).

    Raises:
        ConfigError: naming the file, the key and the fix.
    """
    _, camera = _site_camera(site_file, device)
    return camera, load_profile(camera.profile, profiles_dir)


def _site_camera(site_file: Path, device: str) -> tuple[SiteConfig, CameraConfig]:
    try:
        site = SiteConfig.model_validate(_read_yaml(site_file))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(site_file))) from None
    cameras = {c.device: c for c in site.cameras}
    if device not in cameras:
        raise ConfigError(f"{site_file}: no camera with device {device!r}; cameras: {', '.join(cameras)}")
    return site, cameras[device]


def load_agent_config(
    site_file: Path, device: str, *, profiles_dir: Path = PROFILES_DIR, **overrides: Any
) -> AgentConfig:
    """Merge a site file's camera over its hardware profile into one :class:`AgentConfig`.

    ``overrides`` (from the command line: model_dir, outbox, broker, ...) win over both.

    Raises:
        ConfigError: naming the file, the key and the fix.
    """
    site, camera = _site_camera(site_file, device)
    for rule in camera.rules:
        if rule.get("type") in UNSUPPORTED_RULES:
            raise ConfigError(f"{site_file}: cameras[{device}].rules: {UNSUPPORTED_RULES[rule['type']]}")
    profile = load_profile(camera.profile, profiles_dir)
    raw: dict[str, Any] = {
        "site": site.site,
        "device": camera.device,
        "source": camera.source,
        "loop": camera.loop,
        "realtime": camera.realtime,
        "fps_cap": camera.fps_cap or profile.fps_cap,
        "resolution": profile.resolution,
        "runtime": profile.runtime,
        "delegate": profile.delegate,
        "threads": camera.threads or profile.threads,
        "tiles": camera.tiles,
        "thresholds": camera.thresholds,
        "letterbox": camera.letterbox,
        "classes": camera.classes,
        "zones": camera.zones,
        "lines": camera.lines,
        "rules": camera.rules,
        "sensors": camera.sensors,
        "anonymisation": site.anonymisation,
        "broker": site.broker,
        "outbox_quota_mb": profile.budgets.outbox_mb,
        "throttle_c": profile.thermal.throttle_c,
    }
    tls_dir = overrides.pop("tls_dir", None)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    if tls_dir is not None:
        raw["broker"] = raw["broker"].with_tls_dir(Path(tls_dir))
    try:
        return AgentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"{site_file} (camera {device})")) from None
