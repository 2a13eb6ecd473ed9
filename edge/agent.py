"""The agent's main loop: wires the source, detector, zones, aggregator, outbox and link."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from edge import model_store
from edge.aggregate import WindowAggregator
from edge.config import AgentConfig
from edge.detectors.litert import LiteRTDetector
from edge.link import MqttLink
from edge.outbox import Outbox
from edge.sources import open_source
from edge.zones import count_by_zone
from vigie import __version__, wire

__all__ = ["AgentResult", "run_agent"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AgentResult:
    """What a run did, for the CLI's exit code and the tests."""

    frames: int
    events: int
    left_in_outbox: int


def build_detector(config: AgentConfig) -> LiteRTDetector:
    """Load and verify the configured model."""
    manifest = model_store.load_manifest(config.model)
    model_path, labels_path = model_store.locate(manifest, config.model_dir)
    return LiteRTDetector(
        model_path,
        model_store.read_labels(labels_path),
        model_ref=manifest.ref,
        threads=config.threads,
        min_score=manifest.default_min_score,
        class_scores=manifest.class_scores,
    )


def run_agent(config: AgentConfig, stop: threading.Event | None = None) -> AgentResult:
    """Run until the source ends or ``stop`` is set; returns counts of what happened."""
    stop = stop or threading.Event()
    detector = build_detector(config)
    source = open_source(config.source, loop=config.loop, realtime=config.realtime, fps_cap=config.fps_cap)
    outbox = Outbox(config.outbox)
    link = MqttLink(config.broker, outbox, site=config.site, device=config.device)
    aggregator = WindowAggregator(
        site=config.site,
        device=config.device,
        zones=[z.name for z in config.zones],
        window_s=config.window_s,
        model_ref=detector.model_ref,
    )
    classes = frozenset(config.classes)
    event_topic = wire.topic(config.site, config.device, wire.Channel.EVENT)
    started = time.monotonic()
    frames = events = 0
    period_frames, period_ms, last_beat = 0, 0.0, 0.0

    def enqueue(batch: list[wire.ZoneCountEvent]) -> None:
        nonlocal events
        if batch:
            outbox.put_many((event_topic, wire.encode(e), wire.QOS[wire.Channel.EVENT]) for e in batch)
            events += len(batch)
            link.notify()

    def heartbeat(now: float) -> None:
        nonlocal period_frames, period_ms, last_beat
        elapsed = max(now - last_beat, 1e-6) if last_beat else max(now - started, 1e-6)
        beat = wire.Heartbeat(
            site=config.site,
            device=config.device,
            ts=wire.coarsen(time.time(), wire.HEARTBEAT_GRANULARITY_S),
            agent_version=__version__,
            model=detector.model_ref,
            uptime_s=int(now - started),
            fps=round(min(period_frames / elapsed, 1000.0), 2),
            inference_ms=round(period_ms / period_frames, 2) if period_frames else 0.0,
            outbox_depth=outbox.depth(),
        )
        link.publish_direct(wire.Channel.HEARTBEAT, beat)
        period_frames, period_ms, last_beat = 0, 0.0, now

    log.info(
        "agent starting",
        extra={
            "site": config.site,
            "device": config.device,
            "model": detector.model_ref,
            "runtime": detector.runtime,
            "source": config.source,
            "pending": outbox.depth(),
        },
    )
    link.start()
    try:
        for frame in source.frames():
            if stop.is_set():
                break
            t0 = time.perf_counter()
            detections = detector.detect(frame.rgb)
            period_ms += (time.perf_counter() - t0) * 1000.0
            period_frames += 1
            frames += 1
            enqueue(aggregator.add(frame.ts, count_by_zone(detections, config.zones, classes)))
            now = time.monotonic()
            if link.connected and now - last_beat >= config.heartbeat_s:
                heartbeat(now)
        enqueue(aggregator.flush())
        # A finite source: give the broker time to take what is left (and one heartbeat).
        if not stop.is_set():
            link.drain(config.drain_timeout_s)
            if link.connected and period_frames:
                heartbeat(time.monotonic())
    finally:
        source.close()
        left = link.stop(drain_timeout=0.0 if stop.is_set() else 2.0)
        outbox.close()
    log.info("agent stopped", extra={"frames": frames, "events": events, "left_in_outbox": left})
    return AgentResult(frames=frames, events=events, left_in_outbox=left)
