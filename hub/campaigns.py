"""OTA campaigns: waves of devices, health gates between them, halt and rollback, pause/resume/abort.

A campaign is a row in the hub's shared store (``campaigns`` table, ``hub/storage/campaigns.py``),
so every hub host on one PostgreSQL sees and steers the same rollout. :class:`CampaignRunner`
drives one: it sends ``ota_command`` messages to the current wave's devices over MQTT, reads their
``ota_state`` reports, and asks :func:`ota.rollout.evaluate_gate` whether the wave passes. A
failed gate halts the campaign and sends ``rollback`` to the wave's devices that had installed.
Operators pause, resume or abort from the CLI (or the API), from any host; the runner re-reads
the campaign on every tick.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hub.storage import Campaign, CampaignStateStore, Store, open_store
from ota.rollout import DEFAULT_WAVES, DeviceOutcome, GatePolicy, evaluate_gate, plan_waves
from vigie import wire
from vigie.exceptions import VigieError, WireError
from vigie.mqtt import BrokerConfig, make_client

__all__ = ["CampaignRunner", "CampaignStore", "progress"]

log = logging.getLogger(__name__)

_FINAL = ("done", "aborted", "halted")


class CampaignStore:
    """Campaigns in the hub's store. The runner and operators' commands run in different processes,
    possibly on different hosts: every read-modify-write is one transaction holding the campaign's
    row, so neither overwrites the other's change."""

    def __init__(self, store: CampaignStateStore, *, owned: Store | None = None) -> None:
        self.store = store
        self._owned = owned

    @classmethod
    def open(cls, db: str | Path) -> CampaignStore:
        """The campaigns of the hub whose store is ``db`` (a SQLite file or a ``postgresql://`` URL).

        A SQLite file that does not exist is refused rather than created: it is a wrong ``--db``
        (a new empty store would list no campaign and run one that no hub sees).
        """
        text = str(db)
        if not text.startswith(("postgresql://", "postgres://")) and not Path(text).exists():
            raise VigieError(
                f"--db {text}: no hub store there; pass the store the hub serves from "
                "(`vigie hub serve --db`, or VIGIE_HUB_DB)"
            )
        store = open_store(db)
        return cls(store, owned=store)

    def close(self) -> None:
        """Closes the store if :meth:`open` opened it (a store passed in belongs to its caller)."""
        if self._owned is not None:
            self._owned.close()

    def create(
        self,
        target: str,
        version: str,
        devices: Sequence[str],
        *,
        fractions: Sequence[float] = DEFAULT_WAVES,
        policy: GatePolicy | None = None,
        name: str | None = None,
    ) -> Campaign:
        if not devices:
            raise VigieError("no device matches the selector: nothing to update")
        campaign_id = name or f"c-{time.strftime('%Y%m%d')}-{secrets.token_hex(3)}"
        doc: Campaign = {
            "id": campaign_id,
            "target": target,
            "version": version,
            "devices": list(devices),
            "waves": plan_waves(devices, fractions, seed=campaign_id),
            "fractions": list(fractions),
            "policy": (policy or GatePolicy()).model_dump(),
            "state": "running",
            "wave": 0,
            "wave_started": None,
            "commanded": [],
            "outcomes": {},
            "log": [],
            "created_at": time.time(),
        }
        if not self.store.add_campaign(doc, time.time()):
            raise VigieError(f"campaign {campaign_id!r} exists; choose another --name")
        return doc

    def get(self, campaign_id: str) -> Campaign:
        doc = self.store.get_campaign(campaign_id)
        if doc is None:
            raise VigieError(f"no campaign {campaign_id!r}; `vigie ota campaign list` shows them")
        return doc

    def list(self) -> list[Campaign]:
        return self.store.list_campaigns()

    def update(self, campaign_id: str, **fields: Any) -> None:
        self.modify(campaign_id, lambda _: fields)

    def modify(self, campaign_id: str, change: Callable[[Campaign], Mapping[str, Any] | None]) -> Campaign:
        """Read the campaign, ask ``change`` for the fields to set (None: nothing), write them.

        Atomic across processes and hosts: nobody writes between the read and the write. Returns
        the campaign as written. ``change`` runs inside the transaction: it must not use the store.
        """
        doc = self.store.modify_campaign(campaign_id, change, time.time())
        if doc is None:
            raise VigieError(f"no campaign {campaign_id!r}; `vigie ota campaign list` shows them")
        return doc

    def set_state(self, campaign_id: str, state: str, reason: str) -> Campaign:
        """Operator actions: paused, running (resume), aborted."""

        def change(doc: Campaign) -> dict[str, Any]:
            if doc["state"] in _FINAL and state != "aborted":
                raise VigieError(f"campaign {campaign_id} is {doc['state']}: it cannot become {state}")
            return {"state": state, "log": [*doc["log"], {"at": time.time(), "event": state, "why": reason}]}

        return self.modify(campaign_id, change)


def progress(doc: Campaign) -> dict[str, Any]:
    """A campaign's progress for the API, the CLI and the dashboard."""
    outcomes = doc["outcomes"]
    by_step: dict[str, int] = {}
    for o in outcomes.values():
        by_step[o["step"]] = by_step.get(o["step"], 0) + 1
    installed = by_step.get("installed", 0)
    return {
        "id": doc["id"],
        "target": doc["target"],
        "version": doc["version"],
        "state": doc["state"],
        "wave": doc["wave"] + 1,
        "waves": len(doc["waves"]),
        "devices": len(doc["devices"]),
        "installed": installed,
        "failed": by_step.get("failed", 0) + by_step.get("rolled_back", 0),
        "percent": round(100 * installed / max(1, len(doc["devices"])), 1),
        "steps": by_step,
        "log": doc["log"][-20:],
    }


class CampaignRunner:
    """Drives one campaign to its end (done, halted or aborted)."""

    def __init__(
        self, store: CampaignStore, campaign_id: str, broker: BrokerConfig, *, tick_s: float = 0.5
    ) -> None:
        self.store = store
        self.id = campaign_id
        self.tick_s = tick_s
        self.client = make_client(broker, f"vigie-campaign-{campaign_id}", clean_session=True)
        self.client.on_connect = lambda c, u, f, r, p=None: c.subscribe(
            wire.subscription(wire.Channel.OTA_STATE), qos=1
        )
        self.client.on_message = self._on_message
        self._broker = broker
        self._outcomes: dict[str, dict[str, Any]] = dict(store.get(campaign_id)["outcomes"])
        self._lock = threading.Lock()
        self._dirty = False

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            state = wire.decode(message.payload, wire.Channel.OTA_STATE)
            parts = wire.parse_topic(message.topic)
        except WireError:
            return
        if not isinstance(state, wire.OtaState) or state.campaign != self.id:
            return
        if (state.site, state.device) != (parts.site, parts.device):
            return  # a device speaking for another: ignored (the broker's ACL stops it anyway)
        key = f"{state.site}/{state.device}"
        with self._lock:
            self._outcomes[key] = {
                "step": state.step,
                "latency_ms": state.latency_ms,
                "at": time.time(),
                "model": state.model,
                "reason": state.reason,
                "drift": state.drift,
            }
            self._dirty = True

    def _command(self, devices: Sequence[str], action: str, doc: Campaign) -> None:
        for key in devices:
            site, device = key.split("/", 1)
            msg = wire.OtaCommand(
                site=site,
                device=device,
                ts=int(time.time()),
                campaign=self.id,
                action=action,  # type: ignore[arg-type]
                target=doc["target"],
                version=doc["version"],
            )
            self.client.publish(wire.topic(site, device, wire.Channel.OTA), wire.encode(msg), qos=1)

    def run(self, stop: threading.Event | None = None, timeout_s: float | None = None) -> Campaign:
        stop = stop or threading.Event()
        self.client.connect(self._broker.host, self._broker.port, keepalive=self._broker.keepalive)
        self.client.loop_start()
        deadline = time.monotonic() + timeout_s if timeout_s else None
        try:
            time.sleep(0.5)  # let the subscription settle before the first command
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                doc = self.store.get(self.id)
                if doc["state"] in _FINAL:
                    return doc
                with self._lock:
                    if self._dirty:
                        self.store.update(self.id, outcomes=dict(self._outcomes))
                        self._dirty = False
                    outcomes = dict(self._outcomes)
                if doc["state"] == "paused":
                    time.sleep(self.tick_s)
                    continue
                self._step(outcomes)
                time.sleep(self.tick_s)
            return self.store.get(self.id)
        finally:
            with self._lock:
                self.store.update(self.id, outcomes=dict(self._outcomes))
            self.client.loop_stop()
            self.client.disconnect()

    def _step(self, outcomes: dict[str, dict[str, Any]]) -> None:
        # Decided and written in one transaction: an operator's pause, resume or abort lands
        # before or after a step, never inside one (a stale write would start a wave again).
        self.store.modify(self.id, lambda doc: self._advance(doc, outcomes))

    def _advance(self, doc: Campaign, outcomes: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        if doc["state"] != "running":
            return None
        wave = doc["waves"][doc["wave"]]
        if doc["wave_started"] is None:
            self._command(wave, "install", doc)
            started = f"wave {doc['wave'] + 1} started"
            entry = {"at": time.time(), "event": started, "why": f"{len(wave)} devices"}
            return {
                "wave_started": time.time(),
                "commanded": [*doc["commanded"], *wave],
                "log": [*doc["log"], entry],
            }
        decision = evaluate_gate(
            wave,
            {
                d: DeviceOutcome(o["step"], o.get("latency_ms"), o.get("at", 0), o.get("drift"))
                for d, o in outcomes.items()
            },
            GatePolicy(**doc["policy"]),
            started=doc["wave_started"],
            now=time.time(),
        )
        if decision.verdict == "wait":
            return None
        entry = {
            "at": time.time(),
            "event": f"wave {doc['wave'] + 1} {decision.verdict}",
            "why": decision.reason,
        }
        if decision.verdict == "halt":
            installed = [d for d in wave if outcomes.get(d, {}).get("step") == "installed"]
            self._command(installed, "rollback", doc)
            log.warning("campaign halted", extra={"campaign": self.id, "reason": decision.reason})
            return {"state": "halted", "log": [*doc["log"], entry]}
        if doc["wave"] + 1 >= len(doc["waves"]):
            return {"state": "done", "log": [*doc["log"], entry]}
        return {"wave": doc["wave"] + 1, "wave_started": None, "log": [*doc["log"], entry]}
