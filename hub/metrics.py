"""Prometheus metrics: the hub's own work and the fleet as the hub sees it from heartbeats.

Two sources, chosen so that any uvicorn worker answers a scrape with the same fleet:

* **From the shared store, at scrape time** (:class:`StoreCollector`): ingest counters (every
  ingest worker, in-process or ``vigie hub ingest``, writes them there every 5 s), quarantine
  and rate-limit counts by reason, ingest lag, per-device heartbeat values, purge runs,
  campaign progress, certificate and CRL expiry. Nothing here lives in one process's memory.
* **Process-local** (the module-level histograms): API latency by route, batch commit latency,
  stream clients. With several uvicorn workers, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty
  folder before start and prometheus_client's multiprocess mode sums them across workers
  (docs/operations.md); without it each scrape sees the worker that answered.

Cardinality: per-device series carry only ``site`` and ``device`` (and ``sensor`` for sensor
health, at most 32 per device by the wire protocol); about 12 series per device plus one per
sensor, under 30,000 for a 2,000-device fleet, well inside one Prometheus. API routes are
labelled by their template (``/v1/devices/{site}/{device}``), never by the raw path.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

from cryptography import x509
from prometheus_client import REGISTRY, CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from hub.storage import Store
from hub.storage.base import Campaign

__all__ = [
    "API_SECONDS",
    "BATCH_COMMIT_SECONDS",
    "CONTENT_TYPE",
    "INGEST_COUNTERS",
    "STREAM_CLIENTS",
    "MetricsMiddleware",
    "StoreCollector",
    "campaign_metrics",
    "counted_stream",
    "device_metrics",
    "expiry_metrics",
    "ingest_metrics",
    "render",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

API_SECONDS = Histogram(
    "vigie_api_request_seconds",
    "API request latency by route template, method and status class.",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_COMMIT_SECONDS = Histogram(
    "vigie_ingest_batch_commit_seconds",
    "Time to write one ingest batch to the store (events, quarantine, heartbeats) before acknowledging it.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
STREAM_CLIENTS = Gauge(
    "vigie_api_stream_clients", "Clients connected to /v1/events/stream.", multiprocess_mode="livesum"
)

#: IngestStats counters exposed as ``vigie_ingest_<name>_total``.
INGEST_COUNTERS = (
    "received",
    "stored",
    "duplicates",
    "heartbeats",
    "statuses",
    "quarantined",
    "rate_limited",
    "batches",
)

#: Heartbeat fields exposed per device: (field, metric name, help).
_DEVICE_GAUGES = (
    ("fps", "vigie_device_fps", "Frames analysed per second (last heartbeat)."),
    ("inference_p50_ms", "vigie_device_inference_p50_ms", "Median detector latency (last heartbeat)."),
    ("inference_p95_ms", "vigie_device_inference_p95_ms", "95th percentile detector latency."),
    ("outbox_depth", "vigie_device_outbox_depth", "Messages waiting on the device for the broker."),
    (
        "outbox_dropped",
        "vigie_device_outbox_dropped",
        "Messages the device dropped to keep its disk quota (cumulative since the outbox was created).",
    ),
    ("cpu_temp_c", "vigie_device_temperature_celsius", "SoC temperature."),
    ("disk_free_mb", "vigie_device_disk_free_mb", "Free space where the outbox lives."),
    ("cpu_percent", "vigie_device_cpu_percent", "The agent's CPU use (100 = one core)."),
    ("uptime_s", "vigie_device_uptime_seconds", "Agent uptime."),
)


def ingest_metrics(workers: list[dict[str, Any]], now: float) -> Iterator[Metric]:
    """Metric families from the ingest workers' stored status rows (pure)."""
    label = ["worker"]
    counters = {
        n: CounterMetricFamily(f"vigie_ingest_{n}", f"Ingest {n} (IngestStats).", labels=label)
        for n in INGEST_COUNTERS
    }
    reasons = CounterMetricFamily(
        "vigie_ingest_quarantined_by_field",
        "Messages quarantined, by the field that failed.",
        labels=["worker", "field"],
    )
    connected = GaugeMetricFamily(
        "vigie_ingest_connected", "1 when the worker holds its broker session.", labels=label
    )
    age = GaugeMetricFamily(
        "vigie_ingest_status_age_seconds", "Seconds since the worker last reported.", labels=label
    )
    lag = GaugeMetricFamily(
        "vigie_ingest_lag_seconds",
        "Hub receive time minus the end of the newest event window in the last batch.",
        labels=label,
    )
    for w in workers:
        name = [str(w["worker"])]
        for n in INGEST_COUNTERS:
            counters[n].add_metric(name, float(w.get(n, 0)))
        for field, count in sorted((w.get("quarantine_reasons") or {}).items()):
            reasons.add_metric([*name, field], float(count))
        connected.add_metric(name, 1.0 if w["connected"] else 0.0)
        age.add_metric(name, max(0.0, now - float(w["updated_at"])))
        if w.get("lag_s") is not None:
            lag.add_metric(name, float(w["lag_s"]))
    yield from counters.values()
    yield from (reasons, connected, age, lag)


def device_metrics(devices: list[dict[str, Any]], now: float) -> Iterator[Metric]:
    """Per-device families from the registry's last heartbeat and status (pure)."""
    label = ["site", "device"]
    gauges = {f: GaugeMetricFamily(name, text, labels=label) for f, name, text in _DEVICE_GAUGES}
    seen = GaugeMetricFamily(
        "vigie_device_last_seen_seconds",
        "Seconds since the hub last heard from the device (any message).",
        labels=label,
    )
    online = GaugeMetricFamily(
        "vigie_device_online", "1 when the device's retained status is online.", labels=label
    )
    sensor = GaugeMetricFamily(
        "vigie_device_sensor_ok",
        "1 when a sensor reports ok, 0 when silent or out of range.",
        labels=[*label, "sensor"],
    )
    for d in devices:
        who = [d["site"], d["device"]]
        seen.add_metric(who, max(0.0, now - float(d["last_seen"])))
        online.add_metric(who, 1.0 if d.get("status") == "online" else 0.0)
        beat = d.get("heartbeat") or {}
        for field, family in gauges.items():
            if beat.get(field) is not None:
                family.add_metric(who, float(beat[field]))
        for name, health in sorted((beat.get("sensors") or {}).items()):
            sensor.add_metric([*who, name], 1.0 if health == "ok" else 0.0)
    yield from gauges.values()
    yield from (seen, online, sensor, _problems(devices))


def _problems(devices: list[dict[str, Any]]) -> Metric:
    family = GaugeMetricFamily(
        "vigie_device_problem",
        "1 for each trouble the last heartbeat reported (kind: broker, certificate, disk, camera).",
        labels=["site", "device", "kind"],
    )
    for d in devices:
        for kind in sorted((d.get("heartbeat") or {}).get("problems") or {}):
            family.add_metric([d["site"], d["device"], kind], 1.0)
    return family


def _not_after(path: Path, crl: bool = False) -> float | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if crl:
        nxt = x509.load_pem_x509_crl(data).next_update_utc
        return nxt.timestamp() if nxt is not None else None
    return x509.load_pem_x509_certificate(data).not_valid_after_utc.timestamp()


def expiry_metrics(pki: Path | None, enrolments: list[dict[str, Any]]) -> Iterator[Metric]:
    """Expiry times (epoch seconds) of the CA, the broker certificate, the CRL and device certificates."""
    certs = GaugeMetricFamily(
        "vigie_certificate_expiry_timestamp_seconds",
        "When the hub's CA or broker certificate expires.",
        labels=["cert"],
    )
    crl = GaugeMetricFamily(
        "vigie_crl_next_update_timestamp_seconds",
        "When the published revocation list expires (brokers then refuse every device).",
    )
    devices = GaugeMetricFamily(
        "vigie_device_certificate_expiry_timestamp_seconds",
        "When each enrolled, unrevoked device certificate expires.",
        labels=["site", "device"],
    )
    if pki is not None:
        for name in ("ca", "broker"):
            when = _not_after(pki / f"{name}.crt")
            if when is not None:
                certs.add_metric([name], when)
        when = _not_after(pki / "crl.pem", crl=True)
        if when is not None:
            crl.add_metric([], when)
    for e in enrolments:
        if e.get("revoked_at") is None and e.get("not_after") is not None:
            devices.add_metric([e["site"], e["device"]], float(e["not_after"]))
    yield from (certs, crl, devices)


def campaign_metrics(campaigns: Iterable[Campaign]) -> Iterator[Metric]:
    """Progress of campaigns not yet finished (running, paused, halted); done and aborted ones drop out."""
    state = GaugeMetricFamily(
        "vigie_campaign_state", "1 for the campaign's current state.", labels=["campaign", "state"]
    )
    devices = GaugeMetricFamily("vigie_campaign_devices", "Devices in the campaign.", labels=["campaign"])
    commanded = GaugeMetricFamily(
        "vigie_campaign_commanded", "Devices told to install so far.", labels=["campaign"]
    )
    wave = GaugeMetricFamily("vigie_campaign_wave", "Current wave (0-based).", labels=["campaign"])
    for c in campaigns:
        if c["state"] in ("done", "aborted"):
            continue
        state.add_metric([c["id"], c["state"]], 1.0)
        devices.add_metric([c["id"]], float(len(c["devices"])))
        commanded.add_metric([c["id"]], float(len(c["commanded"])))
        wave.add_metric([c["id"]], float(c["wave"]))
    yield from (state, devices, commanded, wave)


class StoreCollector(Collector):
    """Everything read from the shared store at scrape time (see the module docstring)."""

    def __init__(self, store: Store, pki: Path | None) -> None:
        self.store = store
        self.pki = pki

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        yield from ingest_metrics(self.store.list_ingest_status(), now)
        yield from device_metrics(self.store.list_devices(), now)
        yield from expiry_metrics(self.pki, self.store.list_enrolments())
        yield from campaign_metrics(self.store.list_campaigns())
        quarantine = GaugeMetricFamily("vigie_quarantine_messages", "Messages held in quarantine now.")
        quarantine.add_metric([], float(self.store.quarantine_count()))
        purges = self.store.list_purges(limit=1)
        last = GaugeMetricFamily(
            "vigie_purge_last_run_timestamp_seconds", "When the retention purge last ran."
        )
        if purges:
            last.add_metric([], float(purges[0]["ran_at"]))
        yield from (quarantine, last)


class _Local(Collector):
    """This process's own metrics (default registry), or every worker's in multiprocess mode."""

    def collect(self) -> Iterator[Metric]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            yield from registry.collect()
        else:
            yield from REGISTRY.collect()


def render(store: Store, pki: Path | None) -> bytes:
    """The exposition text for one scrape (blocking: it queries the store)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Local())
    registry.register(StoreCollector(store, pki))
    return generate_latest(registry)


_Scope = MutableMapping[str, Any]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class MetricsMiddleware:
    """API latency by route template (pure ASGI: a streamed response is not buffered).

    The template is read after routing (Starlette puts the matched route in the scope), so
    ``/v1/devices/lyon/cam-1`` counts as ``/v1/devices/{site}/{device}``; unmatched paths count
    as ``unmatched``. Server-sent event streams are left out: they last minutes by design.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: _Scope, receive: Any, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def record_status(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            if not route.endswith("/stream"):
                API_SECONDS.labels(route, scope["method"], f"{status // 100}xx").observe(
                    time.perf_counter() - started
                )


async def counted_stream(feed: AsyncIterator[str]) -> AsyncIterator[str]:
    """``feed``, counted in ``vigie_api_stream_clients`` while a client holds it open."""
    STREAM_CLIENTS.inc()
    try:
        async for chunk in feed:
            yield chunk
    finally:
        STREAM_CLIENTS.dec()
