"""What a device does with an OTA campaign command, whatever connection brought it.

One :class:`OtaCommands` applies the hub's commands one at a time, in a thread of its own:
verify and install through :class:`edge.ota.updater.ModelUpdater` (TUF, A/B slots, smoke test,
rollback), report each step as a retained ``ota_state``, and have the agent reload its model
after a switch. The transport is given: the agent's own MQTT link (:mod:`edge.agent_ota`, the
usual case: one identity, one connection) or the stand-alone ``vigie edge ota-listen``
(:mod:`edge.ota.listener`), each with its own ``publish`` and ``reload_agent``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.ota.slots import SlotLayout
from edge.ota.updater import ModelUpdater, UpdateError
from vigie import wire

__all__ = ["OtaCommands"]

log = logging.getLogger(__name__)


class OtaCommands:
    """Applies OTA commands in order; :meth:`submit` never blocks (called from MQTT's thread)."""

    def __init__(
        self,
        site: str,
        device: str,
        ota_dir: Path,
        repo_url: str,
        *,
        publish: Callable[[wire.OtaState], None],
        reload_agent: Callable[[], bool],
    ) -> None:
        """``reload_agent`` makes the agent run the live slot; False when it could not (a crash)."""
        self.site, self.device = site, device
        self.ota_dir, self.repo_url = ota_dir, repo_url
        self._publish, self._reload = publish, reload_agent
        self.commands: queue.Queue[wire.OtaCommand] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(self, command: wire.OtaCommand) -> None:
        """Queue a command for the worker (an install takes minutes: never on the caller's thread)."""
        self.commands.put(command)

    def _report(self, campaign: str, step: str, **fields: Any) -> None:
        state = wire.OtaState.model_validate(
            {"site": self.site, "device": self.device, "ts": int(time.time()), "campaign": campaign,
             "step": step, **fields}
        )  # fmt: skip
        self._publish(state)

    def handle(self, command: wire.OtaCommand) -> None:
        """Apply one command and report every step; an install already there is answered, not redone."""
        updater = ModelUpdater(
            self.ota_dir,
            self.repo_url,
            report=lambda s: (
                self._report(command.campaign, s["step"])
                if s["step"] in ("download", "unpack", "smoke", "switch", "confirm")
                else None
            ),
        )
        current = updater.current_manifest()
        self._report(command.campaign, "received", model=current.ref if current else None)
        try:
            if command.action == "rollback":
                manifest = updater.revert()
                self._reload()
                self._report(command.campaign, "rolled_back", model=manifest.ref, reason="asked by the hub")
                return
            if current is not None and current.version == command.version:
                self._report(command.campaign, "installed", model=current.ref)  # already there: idempotent
                return
            manifest = updater.update(command.target)
            if not self._reload():
                back = updater.revert()
                self._reload()
                why = f"the agent stopped after switching to {manifest.ref} (crash); back on {back.ref}"
                self._report(command.campaign, "failed", model=back.ref, reason=why)
                return
            self._report(
                command.campaign,
                "installed",
                model=manifest.ref,
                latency_ms=updater.state().get("latency_ms"),
                drift=updater.state().get("drift"),
            )
        except UpdateError as exc:
            now = updater.current_manifest()
            self._report(command.campaign, "failed", model=now.ref if now else None, reason=str(exc)[:300])

    def serve(self, stop: threading.Event) -> None:
        """Finish or undo an update a power cut interrupted, then apply commands until ``stop``."""
        layout = SlotLayout(self.ota_dir)
        before = layout.live_slot()
        try:
            ModelUpdater(self.ota_dir, self.repo_url).recover()
        except (OSError, UpdateError) as exc:  # e.g. an OTA folder this user cannot write: say so, go on
            log.error("OTA recovery failed: %s", exc, extra={"ota_dir": str(self.ota_dir)})
        if layout.live_slot() != before:  # recovery moved the live slot: the agent must follow
            self._reload()
        while not stop.is_set():
            try:
                command = self.commands.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.handle(command)
            except Exception:  # one bad command must not end the device's updates for good
                log.exception("OTA command failed", extra={"campaign": command.campaign})

    def start(self) -> None:
        """Run :meth:`serve` in a daemon thread (the agent's frame loop never waits for an update)."""
        self._thread = threading.Thread(target=self.serve, args=(self._stop,), name="ota", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop taking commands; an install under way is left to ``recover`` at the next start."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
