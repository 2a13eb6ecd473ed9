"""OTA campaigns: waves of devices, health gates between them, halt and rollback, pause/resume/abort.

A campaign is a row in the hub's shared store (``campaigns`` table, ``hub/storage/campaigns.py``),
so every hub host on one PostgreSQL sees and steers the same rollout. The hub's campaign service
(``hub/campaign_service.py``) drives it: it sends ``ota_command`` messages to the current wave's
devices over MQTT, reads their ``ota_state`` reports and heartbeats, and asks
:func:`ota.rollout.evaluate_gate` whether the wave passes. A failed gate halts the campaign and
sends ``rollback`` to the wave's devices that had installed. Operators create, pause, resume,
abort and promote through the API (or the CLI), from any host; the runner re-reads the campaign
on every tick.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hub.storage import Campaign, CampaignStateStore, Store, open_store
from ota.rollout import DEFAULT_WAVES, GatePolicy, plan_waves
from vigie.exceptions import VigieError

__all__ = ["CampaignStore", "progress"]


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

    def promote(self, campaign_id: str, reason: str) -> Campaign:
        """Operator action: the current wave passes without waiting for its gate (it must have started)."""

        def change(doc: Campaign) -> dict[str, Any]:
            if doc["state"] not in ("running", "paused"):
                raise VigieError(f"campaign {campaign_id} is {doc['state']}: nothing to promote")
            if doc["wave_started"] is None:
                raise VigieError(
                    f"campaign {campaign_id}: wave {doc['wave'] + 1} has not started yet; promote it once "
                    "its devices were asked"
                )
            entry = {"at": time.time(), "event": "promote", "why": reason}
            return {"promote": True, "log": [*doc["log"], entry]}

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
        "runner": (doc.get("lease") or {}).get("holder"),
    }
