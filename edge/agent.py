"""The agent's main loop: source → detect → track → rules → anonymise → outbox → MQTT.

Each stage is built from the :class:`~edge.config.AgentConfig`; on SIGHUP the
agent re-reads its configuration and rebuilds the stages that changed,
without restarting or losing its outbox (an invalid new configuration is
refused and the running one kept). A new OTA slot counts as a change of model. With OTA on, the
link also takes the hub's campaign commands, applied in a worker thread (:mod:`edge.agent_ota`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.agent_ota import ota_commands
from edge.config import AgentConfig, detection_settings
from edge.detectors import Detection
from edge.detectors.factory import build_detector, live_slot
from edge.link import MqttLink
from edge.outbox import Outbox
from edge.pipeline import Pipeline
from edge.sdnotify import Notifier
from edge.sensors.config import build_sensor
from edge.sensors.runner import MeasurementAggregator, SensorRunner
from edge.sources import Frame, FrameSource, open_source, redact_url
from edge.status import status_path, write_status
from edge.telemetry import LatencyWindow, ProcessMonitor, cpu_temperature_c, disk_free_mb, rss_mb, too_hot
from edge.troubles import Troubles
from vigie import __version__, wire
from vigie.exceptions import VigieError

__all__ = ["Agent", "AgentControl", "AgentResult", "run_agent"]

log = logging.getLogger(__name__)
#: Below this, the outbox is about to hit the disk's end: a trouble ("disk") until it recovers.
_DISK_LOW_MB = 50.0


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


# What a reload compares to decide what to rebuild.
def _identity(c: AgentConfig) -> tuple[Any, ...]:
    return (c.site, c.device, c.broker, c.outbox)


def _detector_settings(c: AgentConfig) -> tuple[Any, ...]:
    return (c.model, c.model_dir, c.threads, c.tiles, c.runtime, c.delegate, *detection_settings(c))


def _source_settings(c: AgentConfig) -> tuple[Any, ...]:
    return (c.source, c.loop, c.realtime, c.fps_cap, c.resolution)


def _open_source(c: AgentConfig) -> FrameSource:
    return open_source(c.source, loop=c.loop, realtime=c.realtime, fps_cap=c.fps_cap, resolution=c.resolution)


def _watch_camera(
    source: FrameSource, on_trouble: Callable[[str | None, float], None], stop: threading.Event
) -> FrameSource:
    from edge.sources.camera import StreamSource

    if isinstance(source, StreamSource):  # live cameras: files and folders have no trouble to tell
        source.on_trouble = on_trouble
        source.interrupt = stop
    return source


class Agent:
    """One camera's agent: its pipeline, source, outbox, sensors and MQTT link, run by :meth:`run`.

    :meth:`enqueue` is also the sensor runner's sink, so it runs on the sensors' thread too.
    """

    def __init__(
        self,
        config: AgentConfig,
        control: AgentControl | None = None,
        *,
        reload_config: Callable[[], AgentConfig] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.control = control or AgentControl()
        self.notifier = notifier or Notifier()
        # Without a site file to re-read, a reload still picks up a new OTA slot (as `edge run` does).
        self._reload_config = reload_config or (lambda: self.config)
        self.pipeline = Pipeline(config, build_detector(config))
        self.live_slot = live_slot(config)  # an OTA switch changes it: SIGHUP then rebuilds the detector
        self.source = _watch_camera(_open_source(config), self._camera_trouble, self.control.stop)
        self.outbox = Outbox(config.outbox, quota_bytes=int(config.outbox_quota_mb * 1e6))
        aggregator = MeasurementAggregator(
            site=config.site, device=config.device, window_s=config.anonymisation.window_s,
            impulse_db=config.impulse_db,
        )  # fmt: skip
        self._status_lock = threading.Lock()
        self._last_status = 0.0
        self.troubles = Troubles(on_change=self.write_status)
        self.sensors = SensorRunner([build_sensor(s) for s in config.sensors], aggregator, self.enqueue)
        self.ota = ota_commands(self)  # None unless an OTA folder and its repository are configured
        self.link = MqttLink(
            config.broker, self.outbox, site=config.site, device=config.device,
            resend_after_s=config.resend_after_s, troubles=self.troubles,
            on_ota=self.ota.submit if self.ota is not None else None,
        )  # fmt: skip
        self._event_topic = wire.topic(config.site, config.device, wire.Channel.EVENT)
        self._qos = wire.QOS[wire.Channel.EVENT]
        self.started = time.monotonic()
        self.frames = self.events = self.alerts = self.reloads = 0
        self._latencies = LatencyWindow()
        self._monitor = ProcessMonitor()
        self._period_frames, self._last_beat = 0, self.started
        self.hot = False  # above the profile's thermal limit: half rate until it cools
        self._loop_started: float | None = None
        self._loop_ended = 0.0

    # -- what the stages produce ---------------------------------------------------------
    def enqueue(self, batch: Sequence[wire.Event]) -> None:
        """Store events and alerts in the outbox (one transaction), count them, wake the link."""
        if not batch:
            return
        self.outbox.put_many((self._event_topic, wire.encode(e), self._qos, e.id) for e in batch)
        for e in batch:
            if isinstance(e, wire.Alert):
                self.alerts += 1
            else:
                self.events += 1
        self.link.notify()

    def heartbeat(self, now: float) -> None:
        """Publish the health of the last period; switch thermal throttling on or off."""
        elapsed = max(now - self._last_beat, 1e-6)
        _, p50, p95 = self._latencies.take()
        beat = wire.Heartbeat(
            site=self.config.site,
            device=self.config.device,
            ts=wire.coarsen(time.time(), wire.HEARTBEAT_GRANULARITY_S),
            agent_version=__version__,
            model=self.pipeline.detector.model_ref,
            uptime_s=int(now - self.started),
            fps=round(min(self._period_frames / elapsed, 1000.0), 2),
            inference_p50_ms=p50,
            inference_p95_ms=p95,
            cpu_percent=min(self._monitor.cpu_percent(), 6400.0),
            rss_mb=rss_mb(),
            disk_free_mb=disk_free_mb(self.config.outbox),
            cpu_temp_c=cpu_temperature_c(),
            outbox_depth=self.outbox.depth(),
            outbox_dropped=self.outbox.dropped(),
            sensors=self.sensors.health(),
            problems=self.troubles.for_heartbeat(),
        )
        self.link.publish_direct(wire.Channel.HEARTBEAT, beat)
        self._period_frames, self._last_beat = 0, now
        was_hot, self.hot = self.hot, too_hot(beat.cpu_temp_c, self.config.throttle_c, was_hot=self.hot)
        if self.hot != was_hot:
            state = "on" if self.hot else "off"
            log.warning(f"thermal throttling {state}", extra={"cpu_temp_c": beat.cpu_temp_c})

    def write_status(self, state: str = "running") -> None:
        """Rewrite the status file beside the outbox (``vigie edge status``); never stops the agent."""
        body = {
            "site": self.config.site,
            "device": self.config.device,
            "agent_version": __version__,
            "pid": os.getpid(),
            "state": state,
            "updated_at": round(time.time(), 1),
            "broker": f"{self.config.broker.host}:{self.config.broker.port}",
            "connected": self.link.connected,
            "outbox_depth": self.outbox.depth(),
            "outbox_dropped": self.outbox.dropped(),
            "frames": self.frames,
            "troubles": self.troubles.active(),
        }
        self._last_status = time.monotonic()
        try:
            with self._status_lock:
                write_status(status_path(self.config.outbox), body)
        except OSError as exc:  # a full disk must not stop the counting
            log.debug("status file not written", extra={"error": str(exc)})

    # -- SIGHUP --------------------------------------------------------------------------
    def reload(self) -> None:
        """Switch to the re-read configuration, or keep the running one when the new one is refused."""
        self.control.reload.clear()
        self.notifier.reloading()
        try:
            new = self._reload_config()
            pipeline, source, slot = self._rebuild(new)
        except (VigieError, ValueError) as exc:
            log.error("new configuration refused; keeping the running one", extra={"error": str(exc)})
            self.notifier.notify("READY=1", "STATUS=reload refused: " + str(exc).splitlines()[0][:200])
            return
        # Close the running window under the old rules before switching.
        self.enqueue(self.pipeline.anonymiser.flush())
        self.pipeline, self.config, self.live_slot = pipeline, new, slot
        if source is not None:
            self.source.close()
            self.source = _watch_camera(source, self._camera_trouble, self.control.stop)
        self.reloads += 1
        log.info(
            "configuration reloaded",
            extra={"zones": len(new.zones), "lines": len(new.lines), "rules": len(new.rules)},
        )
        self.notifier.notify("READY=1", "STATUS=configuration reloaded")

    def _rebuild(self, new: AgentConfig) -> tuple[Pipeline, FrameSource | None, Path | None]:
        """What ``new`` needs (the running detector and source kept when unchanged); switches nothing."""
        if _identity(new) != _identity(self.config):
            raise VigieError("site, device, broker and outbox cannot change on reload: restart the agent")
        slot = live_slot(new)
        keep_detector = _detector_settings(new) == _detector_settings(self.config) and slot == self.live_slot
        pipeline = Pipeline(new, self.pipeline.detector if keep_detector else build_detector(new))
        same_source = _source_settings(new) == _source_settings(self.config)
        return pipeline, None if same_source else _open_source(new), slot

    # -- the loop ------------------------------------------------------------------------
    def step(self, frame: Frame) -> None:
        """One frame: analyse, store what it produced, answer a snapshot request, beat when due."""
        t0 = time.perf_counter()
        if self._loop_started is None:
            self._loop_started = t0
        batch, fired = self.pipeline.step(frame)
        spent = time.perf_counter() - t0
        self._latencies.add(spent * 1000.0)
        if self.hot:
            self.control.stop.wait(spent)  # as long again idle: half the rate, half the heat
        self._period_frames += 1
        self.frames += 1
        self.enqueue(fired)
        self.enqueue(batch)
        if self.control.snapshot.is_set():
            self.control.snapshot.clear()
            _snapshot(self.config, frame, self.pipeline.last_detections)
        self.notifier.watchdog()
        self._periodic()

    def _periodic(self) -> None:
        """The heartbeat and the status file when due: after each frame, and while the camera is down."""
        now = time.monotonic()
        if self.link.connected and now - self._last_beat >= self.config.heartbeat_s:
            self.heartbeat(now)
        if now - self._last_status >= self.config.heartbeat_s:
            self._check_disk()
            self.write_status()

    def _check_disk(self) -> None:
        # A stable cause (not the free MB, which moves): one log line, not one per megabyte.
        if disk_free_mb(self.config.outbox) < _DISK_LOW_MB:
            where = self.config.outbox.parent
            self.troubles.report("disk", f"under {_DISK_LOW_MB:.0f} MB free where the outbox lives ({where})")
        else:
            self.troubles.clear("disk")

    def _camera_trouble(self, cause: str | None, retry_s: float) -> None:
        if cause is None:
            self.troubles.clear("camera")
            return
        self.troubles.report("camera", cause, next_retry_at=time.time() + retry_s)
        self.notifier.watchdog()  # the agent is alive, waiting for its camera
        self._periodic()

    def _play_source(self) -> bool:
        """Step through the source until it ends or stop is set; True when a reload needs it replayed."""
        try:
            for frame in self.source.frames():
                if self.control.stop.is_set():
                    return False
                self.step(frame)
                if self.control.reload.is_set():
                    self.reload()
                    return True  # the source may have changed: iterate the new one
            return False
        finally:
            self._loop_ended = time.perf_counter()

    def _start(self) -> None:
        log.info(
            "agent starting",
            extra={
                "site": self.config.site,
                "device": self.config.device,
                "model": self.pipeline.detector.model_ref,
                "runtime": getattr(self.pipeline.detector, "runtime", "?"),
                "source": redact_url(self.config.source),
                "pending": self.outbox.depth(),
            },
        )
        self.write_status()
        self.link.start()
        if self.ota is not None:
            self.ota.start()
        self._start_renewal()
        self.sensors.start()
        self.notifier.ready(f"analysing {redact_url(self.config.source)}")

    def _start_renewal(self) -> None:
        """Renew the device certificate months before it expires (edge/cert_renewal.py), hub known."""
        from edge.cert_renewal import CertRenewer, hub_of

        cert = self.config.broker.tls_cert
        hub = hub_of(cert.parent) if cert is not None else None
        self.renewer = CertRenewer(cert.parent, hub) if cert is not None and hub is not None else None
        if self.renewer is not None:
            self.renewer.start()

    def _finish(self) -> None:
        """Close the open window; after a finite source, let the broker take what is left (and one beat)."""
        self.enqueue(self.pipeline.anonymiser.flush())
        if not self.control.stop.is_set():
            self.link.drain(self.config.drain_timeout_s)
            if self.link.connected and self._period_frames:
                self.heartbeat(time.monotonic())

    def _stop(self) -> int:
        """Stop every part; returns how many events are left in the outbox for the next start."""
        self.notifier.stopping()
        self.sensors.stop()  # closes the open measurement windows into the outbox
        self.source.close()
        renewer = getattr(self, "renewer", None)
        if renewer is not None:
            renewer.stop()
        if self.ota is not None:
            self.ota.stop()
        left = self.link.stop(drain_timeout=0.0 if self.control.stop.is_set() else 2.0)
        self.write_status("stopped")
        self.outbox.close()
        return left

    def run(self) -> AgentResult:
        """Run until the source ends or ``control.stop`` is set; returns counts of what happened."""
        self._start()
        try:
            while not self.control.stop.is_set() and self._play_source():
                pass
            self._finish()
        finally:
            left = self._stop()
        counts = {"frames": self.frames, "events": self.events, "alerts": self.alerts, "left_in_outbox": left}
        log.info("agent stopped", extra=counts)
        started = self._loop_started
        return AgentResult(
            frames=self.frames,
            events=self.events,
            alerts=self.alerts,
            left_in_outbox=left,
            reloads=self.reloads,
            loop_seconds=self._loop_ended - started if started is not None else 0.0,
        )


def run_agent(
    config: AgentConfig,
    control: AgentControl | None = None,
    *,
    reload_config: Callable[[], AgentConfig] | None = None,
    notifier: Notifier | None = None,
) -> AgentResult:
    """Run until the source ends or ``control.stop`` is set; returns counts of what happened."""
    return Agent(config, control, reload_config=reload_config, notifier=notifier).run()


def _snapshot(config: AgentConfig, frame: Frame, detections: list[Detection]) -> Any:
    from edge.snapshot import save_snapshot

    try:
        path = save_snapshot(frame.rgb, detections, config)
        log.info("calibration snapshot saved (local only, faces blurred)", extra={"path": str(path)})
        return path
    except VigieError as exc:
        log.error("snapshot failed", extra={"error": str(exc)})
        return None
