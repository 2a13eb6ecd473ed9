"""The agent's main loop: source → detect → track → rules → anonymise → outbox → MQTT.

Each stage is built from the :class:`~edge.config.AgentConfig`; on SIGHUP the
agent re-reads its configuration and rebuilds the stages that changed,
without restarting or losing its outbox (an invalid new configuration is
refused and the running one kept).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge import model_store
from edge.anonymise import Anonymiser
from edge.config import AgentConfig, detection_settings
from edge.detectors import Detection, Detector
from edge.detectors.litert import LiteRTDetector
from edge.detectors.tiling import TiledDetector
from edge.link import MqttLink
from edge.outbox import Outbox
from edge.rules import RuleEngine, line_crossings
from edge.sdnotify import Notifier
from edge.sensors.config import build_sensor
from edge.sensors.runner import MeasurementAggregator, SensorRunner
from edge.sources import Frame, FrameSource, open_source, redact_url
from edge.telemetry import LatencyWindow, ProcessMonitor, cpu_temperature_c, disk_free_mb, rss_mb, too_hot
from edge.tracker import IouTracker
from edge.zones import count_by_zone
from vigie import __version__, wire
from vigie.exceptions import VigieError

__all__ = ["AgentControl", "AgentResult", "build_detector", "run_agent"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AgentResult:
    """What a run did, for the CLI's exit code and the tests."""

    frames: int
    events: int
    alerts: int
    left_in_outbox: int
    reloads: int
    loop_seconds: float
    """Time spent from the first frame to the last (startup and shutdown excluded)."""


@dataclass
class AgentControl:
    """Flags set from signal handlers, read by the loop between frames."""

    stop: threading.Event = field(default_factory=threading.Event)
    reload: threading.Event = field(default_factory=threading.Event)
    snapshot: threading.Event = field(default_factory=threading.Event)


def build_detector(config: AgentConfig) -> Detector:
    """Load and verify the configured model (tiled when asked); the OTA live slot wins when there is one."""
    slot = _ota_live(config)
    if slot is not None and (slot / "manifest.json").is_file():
        # The live OTA slot: verified by TUF and smoke-tested before it went live.
        from ota.bundle import BundleManifest

        bundle = BundleManifest.model_validate_json((slot / "manifest.json").read_text())
        model_path, labels_path, ref = slot / bundle.model_file, slot / bundle.labels_file, bundle.ref
        min_score, class_scores, output = bundle.min_score, None, bundle.output
        log.info("model from the OTA slot", extra={"model": ref, "slot": slot.name})
    else:
        manifest = model_store.load_manifest(config.model)
        model_path, labels_path = model_store.locate(manifest, config.model_dir)
        ref, min_score, class_scores = manifest.ref, manifest.default_min_score, manifest.class_scores
        output = manifest.output.kind
    detector: Detector = LiteRTDetector(
        model_path,
        model_store.read_labels(labels_path),
        model_ref=ref,
        threads=config.threads,
        min_score=min_score,
        class_scores={**(class_scores or {}), **config.thresholds},  # the site's per-camera thresholds win
        output=output,
        runtime=config.runtime,
        delegate=config.delegate,
        letterbox=config.letterbox,
    )
    if config.tiles > 1:
        detector = TiledDetector(detector, config.tiles)
    return detector


def _ota_live(config: AgentConfig) -> Path | None:
    """The OTA live slot's real path, or None."""
    if config.ota_dir is None or not (config.ota_dir / "current").exists():
        return None
    return (config.ota_dir / "current").resolve()


class _Pipeline:
    """The per-frame stages built from one configuration."""

    def __init__(self, config: AgentConfig, detector: Detector) -> None:
        self.config = config
        self.detector = detector
        self.tracker = IouTracker()
        self.engine = RuleEngine(
            config.rules, {z.name: z for z in config.zones}, {ln.name: ln for ln in config.lines}
        )
        self.anonymiser = Anonymiser(
            site=config.site,
            device=config.device,
            zones=[z.name for z in config.zones],
            lines=[ln.name for ln in config.lines],
            classes=config.classes,
            model_ref=detector.model_ref,
            config=config.anonymisation,
        )
        self.classes = frozenset(config.classes)
        self.last_detections: list[Detection] = []

    def step(self, frame: Frame) -> tuple[list[wire.Event], list[wire.Alert]]:
        detections = [d for d in self.detector.detect(frame.rgb) if d.label in self.classes]
        self.last_detections = detections
        moved = self.tracker.update(frame.ts, detections)
        crossings = line_crossings(moved, self.config.lines)
        h, w = frame.rgb.shape[:2]
        firings = self.engine.update(frame.ts, self.tracker.tracks, crossings, w / h)
        events = self.anonymiser.add(frame.ts, count_by_zone(detections, self.config.zones), crossings)
        return events, [self.anonymiser.alert(f) for f in firings]


def run_agent(
    config: AgentConfig,
    control: AgentControl | None = None,
    *,
    reload_config: Callable[[], AgentConfig] | None = None,
    notifier: Notifier | None = None,
) -> AgentResult:
    """Run until the source ends or ``control.stop`` is set; returns counts of what happened."""
    control = control or AgentControl()
    notifier = notifier or Notifier()
    detector = build_detector(config)
    live_slot = _ota_live(config)  # an OTA switch changes it: SIGHUP then rebuilds the detector
    pipeline = _Pipeline(config, detector)
    source = open_source(
        config.source, loop=config.loop, realtime=config.realtime, fps_cap=config.fps_cap,
        resolution=config.resolution,
    )  # fmt: skip
    outbox = Outbox(config.outbox, quota_bytes=int(config.outbox_quota_mb * 1e6))
    sensors = SensorRunner(
        [build_sensor(s) for s in config.sensors],
        MeasurementAggregator(
            site=config.site, device=config.device, window_s=config.anonymisation.window_s,
            impulse_db=config.impulse_db,
        ),
        lambda batch: enqueue(batch),
    )  # fmt: skip
    link = MqttLink(
        config.broker, outbox, site=config.site, device=config.device, resend_after_s=config.resend_after_s
    )
    event_topic = wire.topic(config.site, config.device, wire.Channel.EVENT)
    qos = wire.QOS[wire.Channel.EVENT]
    started = time.monotonic()
    frames = events = alerts = reloads = 0
    latencies = LatencyWindow()
    monitor = ProcessMonitor()
    period_frames, last_beat = 0, started
    hot = False  # above the profile's thermal limit: half rate until it cools

    def enqueue(batch: Sequence[wire.Event]) -> None:
        nonlocal events, alerts
        if batch:
            outbox.put_many((event_topic, wire.encode(e), qos, e.id) for e in batch)
            for e in batch:
                if isinstance(e, wire.Alert):
                    alerts += 1
                else:
                    events += 1
            link.notify()

    def heartbeat(now: float) -> None:
        nonlocal period_frames, last_beat, hot
        elapsed = max(now - last_beat, 1e-6)
        _, p50, p95 = latencies.take()
        beat = wire.Heartbeat(
            site=config.site,
            device=config.device,
            ts=wire.coarsen(time.time(), wire.HEARTBEAT_GRANULARITY_S),
            agent_version=__version__,
            model=pipeline.detector.model_ref,
            uptime_s=int(now - started),
            fps=round(min(period_frames / elapsed, 1000.0), 2),
            inference_p50_ms=p50,
            inference_p95_ms=p95,
            cpu_percent=min(monitor.cpu_percent(), 6400.0),
            rss_mb=rss_mb(),
            disk_free_mb=disk_free_mb(config.outbox),
            cpu_temp_c=cpu_temperature_c(),
            outbox_depth=outbox.depth(),
            outbox_dropped=outbox.dropped(),
            sensors=sensors.health(),
        )
        link.publish_direct(wire.Channel.HEARTBEAT, beat)
        period_frames, last_beat = 0, now
        was_hot, hot = hot, too_hot(beat.cpu_temp_c, config.throttle_c, was_hot=hot)
        if hot != was_hot:
            state = "on" if hot else "off"
            log.warning(f"thermal throttling {state}", extra={"cpu_temp_c": beat.cpu_temp_c})

    def reload() -> None:
        nonlocal pipeline, source, config, reloads, live_slot
        control.reload.clear()
        if reload_config is None:
            log.warning("SIGHUP ignored: the agent was started without a configuration file")
            return
        notifier.reloading()
        try:
            new = reload_config()
            if (new.site, new.device, new.broker, new.outbox) != (
                config.site,
                config.device,
                config.broker,
                config.outbox,
            ):
                raise VigieError("site, device, broker and outbox cannot change on reload: restart the agent")
            new_slot = _ota_live(new)
            keep_detector = (new.model, new.model_dir, new.threads, new.tiles, new.runtime, new.delegate) == (
                config.model, config.model_dir, config.threads, config.tiles, config.runtime, config.delegate
            ) and new_slot == live_slot and detection_settings(new) == detection_settings(config)  # fmt: skip
            new_pipeline = _Pipeline(new, pipeline.detector if keep_detector else build_detector(new))
            new_source: FrameSource | None = None
            if (new.source, new.loop, new.realtime, new.fps_cap, new.resolution) != (
                config.source, config.loop, config.realtime, config.fps_cap, config.resolution
            ):  # fmt: skip
                new_source = open_source(
                    new.source,
                    loop=new.loop,
                    realtime=new.realtime,
                    fps_cap=new.fps_cap,
                    resolution=new.resolution,
                )
        except (VigieError, ValueError) as exc:
            log.error("new configuration refused; keeping the running one", extra={"error": str(exc)})
            notifier.notify("READY=1", "STATUS=reload refused: " + str(exc).splitlines()[0][:200])
            return
        # Close the running window under the old rules before switching.
        enqueue(pipeline.anonymiser.flush())
        pipeline, config, live_slot = new_pipeline, new, new_slot
        if new_source is not None:
            source.close()
            source = new_source
        reloads += 1
        log.info(
            "configuration reloaded",
            extra={"zones": len(new.zones), "lines": len(new.lines), "rules": len(new.rules)},
        )
        notifier.notify("READY=1", "STATUS=configuration reloaded")

    log.info(
        "agent starting",
        extra={
            "site": config.site,
            "device": config.device,
            "model": detector.model_ref,
            "runtime": getattr(detector, "runtime", "?"),
            "source": redact_url(config.source),
            "pending": outbox.depth(),
        },
    )
    link.start()
    sensors.start()
    notifier.ready(f"analysing {redact_url(config.source)}")
    loop_started: float | None = None
    loop_ended = 0.0
    try:
        while not control.stop.is_set():
            restart = False
            for frame in source.frames():
                if control.stop.is_set():
                    break
                t0 = time.perf_counter()
                if loop_started is None:
                    loop_started = t0
                batch, fired = pipeline.step(frame)
                spent = time.perf_counter() - t0
                latencies.add(spent * 1000.0)
                if hot:
                    control.stop.wait(spent)  # as long again idle: half the rate, half the heat
                period_frames += 1
                frames += 1
                enqueue(fired)
                enqueue(batch)
                if control.snapshot.is_set():
                    control.snapshot.clear()
                    _snapshot(config, frame, pipeline.last_detections)
                notifier.watchdog()
                now = time.monotonic()
                if link.connected and now - last_beat >= config.heartbeat_s:
                    heartbeat(now)
                if control.reload.is_set():
                    reload()
                    restart = True  # the source may have changed: iterate the new one
                    break
            loop_ended = time.perf_counter()
            if not restart:
                break
        enqueue(pipeline.anonymiser.flush())
        # A finite source: give the broker time to take what is left (and one heartbeat).
        if not control.stop.is_set():
            link.drain(config.drain_timeout_s)
            if link.connected and period_frames:
                heartbeat(time.monotonic())
    finally:
        notifier.stopping()
        sensors.stop()  # closes the open measurement windows into the outbox
        source.close()
        left = link.stop(drain_timeout=0.0 if control.stop.is_set() else 2.0)
        outbox.close()
    log.info(
        "agent stopped", extra={"frames": frames, "events": events, "alerts": alerts, "left_in_outbox": left}
    )
    loop_seconds = loop_ended - loop_started if loop_started is not None else 0.0
    return AgentResult(
        frames=frames,
        events=events,
        alerts=alerts,
        left_in_outbox=left,
        reloads=reloads,
        loop_seconds=loop_seconds,
    )


def _snapshot(config: AgentConfig, frame: Frame, detections: list[Detection]) -> Any:
    from edge.snapshot import save_snapshot

    try:
        path = save_snapshot(frame.rgb, detections, config)
        log.info("calibration snapshot saved (local only, faces blurred)", extra={"path": str(path)})
        return path
    except VigieError as exc:
        log.error("snapshot failed", extra={"error": str(exc)})
        return None
