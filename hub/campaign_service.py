"""The campaign service: the hub drives OTA campaigns itself, one runner per campaign across hosts.

Each hub process (``vigie hub serve`` with ingest) runs one :class:`CampaignService` thread. Every
tick it reads the unfinished campaigns from the shared store and, for each one whose lease is free,
expired or its own, takes or renews the lease and makes one step, all in one row-locked
transaction (:mod:`hub.campaign_lease`): send the wave's ``ota_command`` messages, fold in the
devices' ``ota_state`` reports and heartbeats, ask the health gate (:func:`ota.rollout.evaluate_gate`),
halt and roll back, or start the next wave. A hub that dies stops renewing; another takes over
when the lease lapses (``campaign_lease_s``, 15 s by default) and goes on from the stored wave.

Devices publish ``ota_state`` retained, so the new runner reads every device's last report as it
subscribes: an install reported while no runner listened is not lost. Commands go out inside the
step's transaction, before it commits: a runner killed between the two makes its successor send
the wave again, which the device's listener answers without installing twice (it is there
already); the other order would lose the wave.

``vigie ota campaign run`` (local mode) runs the same service for one campaign (``only``).
"""

from __future__ import annotations

import collections
import logging
import os
import secrets
import threading
import time
from collections.abc import Sequence
from typing import Any

from hub.campaign_lease import lease_holder, merge_reports, take_lease
from hub.campaigns import CampaignStore
from hub.config import HubSettings
from hub.jobs import new_holder
from hub.storage import Campaign, Store
from ota.rollout import DeviceOutcome, GatePolicy, crash_looping, evaluate_gate
from vigie import wire
from vigie.exceptions import WireError
from vigie.mqtt import BrokerConfig, make_client

__all__ = ["CampaignService", "new_holder", "start_service"]

log = logging.getLogger(__name__)

_FINAL = ("done", "aborted", "halted")
#: Heartbeats kept per device between two steps (a crash loop shows in far fewer).
_BEATS_KEPT = 64


def start_service(store: Store, settings: HubSettings) -> CampaignService:
    """The hub's campaign service on its store and broker, started (``hub.api.main`` lifespan)."""
    service = CampaignService(CampaignStore(store), settings.broker, lease_s=settings.campaign_lease_s)
    service.start()
    log.info("campaign service started", extra={"holder": service.holder})
    return service


def _outcomes(raw: dict[str, dict[str, Any]]) -> dict[str, DeviceOutcome]:
    return {
        d: DeviceOutcome(o["step"], o.get("latency_ms"), o.get("at", 0), o.get("drift"), o.get("restarts", 0))
        for d, o in raw.items()
    }


class CampaignService:
    """Runs every unfinished campaign whose lease it can hold (or only one, ``only``)."""

    def __init__(
        self,
        store: CampaignStore,
        broker: BrokerConfig,
        *,
        holder: str | None = None,
        lease_s: float = 15.0,
        tick_s: float = 0.5,
        only: str | None = None,
    ) -> None:
        self.store, self.broker, self.only = store, broker, only
        self.holder = holder or new_holder()
        self.lease_s, self.tick_s = lease_s, tick_s
        self.client = make_client(broker, f"vigie-campaigns-{os.getpid()}-{secrets.token_hex(3)}")
        self._subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda c, u, mid, rc, p=None: self._subscribed.set()
        self.client.on_disconnect = lambda *a: self._subscribed.clear()
        self.client.on_message = self._on_message
        self._lock = threading.Lock()
        # Kept until a step of this process folds them in: a takeover finds what came meanwhile.
        self._reports: dict[str, dict[str, dict[str, Any]]] = {}  # campaign -> device -> last report
        self._beats: dict[str, collections.deque[tuple[int, str]]] = {}  # device -> (uptime, model)
        self._held: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- MQTT: reports and heartbeats, buffered until the next tick -------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
        client.subscribe(
            [
                (wire.subscription(wire.Channel.OTA_STATE), 1),
                (wire.subscription(wire.Channel.HEARTBEAT), 0),
            ]
        )

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            parts = wire.parse_topic(message.topic)
            msg = wire.decode(message.payload, parts.channel)
        except WireError:
            return
        if (getattr(msg, "site", None), getattr(msg, "device", None)) != (parts.site, parts.device):
            return  # a device speaking for another: ignored (the broker's ACL stops it anyway)
        key = f"{parts.site}/{parts.device}"
        with self._lock:
            if isinstance(msg, wire.OtaState):
                self._reports.setdefault(msg.campaign, {})[key] = {
                    "step": msg.step,
                    "latency_ms": msg.latency_ms,
                    "at": time.time(),
                    "model": msg.model,
                    "reason": msg.reason,
                    "drift": msg.drift,
                }
            elif isinstance(msg, wire.Heartbeat):
                beats = self._beats.setdefault(key, collections.deque(maxlen=_BEATS_KEPT))
                beats.append((msg.uptime_s, msg.model))

    # -- the loop -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Run in a daemon thread (the hub's lifespan); :meth:`stop` ends it and hands the leases back."""
        self._thread = threading.Thread(target=self.run, args=(self._stop,), name="campaigns", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def run(self, stop: threading.Event, timeout_s: float | None = None) -> Campaign | None:
        """Tick until ``stop`` (or, with ``only``, until that campaign ends); returns it then."""
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=self.broker.keepalive)
        self.client.loop_start()
        deadline = time.monotonic() + timeout_s if timeout_s else None
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                try:
                    if self.tick() and self.only is not None:
                        break
                except Exception:  # a store or broker hiccup must not end the service
                    log.exception("campaign tick failed; next try in %s s", self.tick_s)
                stop.wait(self.tick_s)
            return self.store.get(self.only) if self.only else None
        finally:
            self._release()
            self.client.loop_stop()
            self.client.disconnect()

    def tick(self) -> bool:
        """One pass over the campaigns; True when ``only`` is set and that campaign has ended."""
        docs = [self.store.get(self.only)] if self.only else self.store.list()
        live = {d["id"] for d in docs if d["state"] not in _FINAL}
        with self._lock:
            for gone in set(self._reports) - live:  # finished campaigns, or other campaigns' retained reports
                del self._reports[gone]
        now = time.time()
        for doc in docs:
            if doc["state"] in _FINAL:
                if doc["id"] in self._held:
                    self._step(doc)
                continue
            if lease_holder(doc, now) not in (None, self.holder):
                self._held.discard(doc["id"])  # someone else's (or taken over while we were stuck)
                continue
            if not self._subscribed.is_set():
                continue  # no step without the broker: no command could go out, no report come in
            self._step(doc)
        return bool(self.only) and docs[0]["state"] in _FINAL

    def _step(self, current: Campaign) -> None:
        campaign_id = current["id"]
        with self._lock:
            reports = dict(self._reports.get(campaign_id, {}))
            beats = {d: list(self._beats[d]) for d in current["devices"] if d in self._beats}

        def change(doc: Campaign) -> dict[str, Any] | None:
            now = time.time()
            if doc["state"] in _FINAL:
                return self._release_change(doc)
            lease = take_lease(doc, self.holder, now, self.lease_s)
            if lease is None:
                return None
            outcomes = merge_reports(doc["outcomes"], reports, beats, doc["version"])
            step = self._advance({**doc, "outcomes": outcomes}, now) if doc["state"] == "running" else None
            held_for = ((doc.get("lease") or {}).get("until", 0) - now) if lease_holder(doc, now) else 0
            if not step and outcomes == doc["outcomes"] and held_for > self.lease_s * 2 / 3:
                return None  # nothing new and the lease still fresh: no write
            return {"lease": lease, "outcomes": outcomes, **(step or {})}

        written = self.store.modify(campaign_id, change)
        mine = (written.get("lease") or {}).get("holder") == self.holder
        if mine:
            if campaign_id not in self._held:
                log.info("campaign lease taken", extra={"campaign": campaign_id, "holder": self.holder})
            self._held.add(campaign_id)
            with self._lock:  # folded in: forget them (what arrived since stays for the next step)
                kept = self._reports.get(campaign_id, {})
                for device, report in reports.items():
                    if kept.get(device) is report:
                        del kept[device]
                for device, seen in beats.items():
                    for _ in seen:
                        self._beats[device].popleft()
        else:
            self._held.discard(campaign_id)

    def _release_change(self, doc: Campaign) -> dict[str, Any] | None:
        return {"lease": None} if (doc.get("lease") or {}).get("holder") == self.holder else None

    def _release(self) -> None:
        """Hand the leases back on a clean stop, so that another hub goes on at once."""
        for campaign_id in list(self._held):
            try:
                self.store.modify(campaign_id, self._release_change)
            except Exception:  # the store is going away with us: the lease lapses by itself
                log.warning("campaign lease not released", extra={"campaign": campaign_id})
        self._held.clear()

    # -- one step of one campaign (inside its row lock) -----------------------------------------------
    def _command(self, devices: Sequence[str], action: str, doc: Campaign) -> None:
        for key in devices:
            site, device = key.split("/", 1)
            msg = wire.OtaCommand(
                site=site,
                device=device,
                ts=int(time.time()),
                campaign=doc["id"],
                action=action,  # type: ignore[arg-type]
                target=doc["target"],
                version=doc["version"],
            )
            self.client.publish(wire.topic(site, device, wire.Channel.OTA), wire.encode(msg), qos=1)

    def _advance(self, doc: Campaign, now: float) -> dict[str, Any] | None:
        wave = doc["waves"][doc["wave"]]
        if doc["wave_started"] is None:
            self._command(wave, "install", doc)
            entry = {"at": now, "event": f"wave {doc['wave'] + 1} started", "why": f"{len(wave)} devices",
                     "by": self.holder}  # fmt: skip
            return {"wave_started": now, "commanded": [*doc["commanded"], *wave], "log": [*doc["log"], entry]}
        outcomes = _outcomes(doc["outcomes"])
        policy = GatePolicy(**doc["policy"])
        earlier = [d for w in doc["waves"][: doc["wave"]] for d in w]
        looping = crash_looping(earlier, outcomes, policy)
        if looping:
            why = f"{len(looping)} device(s) of earlier waves crash-looping on the new model: {looping[:5]}"
            return self._halt(doc, wave, looping, f"wave {doc['wave'] + 1} halt", why)
        if doc.get("promote"):
            entry = {"at": now, "event": f"wave {doc['wave'] + 1} promoted", "why": "the operator's promote",
                     "by": self.holder}  # fmt: skip
            return self._next(doc, entry)
        decision = evaluate_gate(wave, outcomes, policy, started=doc["wave_started"], now=now)
        if decision.verdict == "wait":
            return None
        event = f"wave {doc['wave'] + 1} {decision.verdict}"
        if decision.verdict == "halt":
            return self._halt(doc, wave, crash_looping(wave, outcomes, policy), event, decision.reason)
        return self._next(doc, {"at": now, "event": event, "why": decision.reason, "by": self.holder})

    def _next(self, doc: Campaign, entry: dict[str, Any]) -> dict[str, Any]:
        if doc["wave"] + 1 >= len(doc["waves"]):
            return {"state": "done", "promote": False, "log": [*doc["log"], entry]}
        return {"wave": doc["wave"] + 1, "wave_started": None, "promote": False, "log": [*doc["log"], entry]}

    def _halt(
        self, doc: Campaign, wave: Sequence[str], looping: Sequence[str], event: str, why: str
    ) -> dict[str, Any]:
        """Halt; the wave's devices that installed, and crash-looping ones, go back."""
        installed = [d for d in wave if doc["outcomes"].get(d, {}).get("step") == "installed"]
        self._command(sorted({*installed, *looping}), "rollback", doc)
        log.warning("campaign halted", extra={"campaign": doc["id"], "reason": why})
        entry = {"at": time.time(), "event": event, "why": why, "by": self.holder}
        return {"state": "halted", "log": [*doc["log"], entry]}
