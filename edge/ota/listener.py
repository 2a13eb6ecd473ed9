"""The device side of OTA campaigns: listen on ``vigie/v1/<site>/<device>/ota``, update, report.

Runs beside the agent (``vigie edge ota-listen``, its own systemd unit): commands arrive
over MQTT, the update itself goes through :class:`edge.ota.updater.ModelUpdater` (TUF, A/B,
smoke test, rollback), each step is reported on the ``ota-state`` channel, and after a
switch the agent is told to reload its model (SIGHUP to its pid).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any

from edge.ota.updater import ModelUpdater, UpdateError
from vigie import wire
from vigie.exceptions import WireError
from vigie.mqtt import BrokerConfig, make_client

__all__ = ["OtaListener"]

log = logging.getLogger(__name__)


class OtaListener:
    """One device's OTA command loop."""

    def __init__(
        self,
        broker: BrokerConfig,
        site: str,
        device: str,
        ota_dir: Path,
        repo_url: str,
        *,
        agent_pid_file: Path | None = None,
        crash_watch_s: float = 20.0,
    ) -> None:
        self.site, self.device = site, device
        self.repo_url = repo_url
        self.ota_dir = ota_dir
        self.agent_pid_file = agent_pid_file
        self.crash_watch_s = crash_watch_s
        self.commands: queue.Queue[wire.OtaCommand] = queue.Queue()
        self.client = make_client(broker, f"vigie-ota-{site}-{device}", clean_session=False)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._broker = broker

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
        client.subscribe(wire.topic(self.site, self.device, wire.Channel.OTA), qos=1)
        log.info("ota listener connected")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            command = wire.decode(message.payload, wire.Channel.OTA)
        except WireError as exc:
            log.warning("bad OTA command ignored", extra={"error": str(exc)})
            return
        if isinstance(command, wire.OtaCommand):
            self.commands.put(command)

    def _report(self, campaign: str, step: str, **fields: Any) -> None:
        state = wire.OtaState.model_validate(
            {
                "site": self.site,
                "device": self.device,
                "ts": int(time.time()),
                "campaign": campaign,
                "step": step,
                **fields,
            }
        )
        # Retained: a hub that takes the campaign over after another died reads the last report.
        topic = wire.topic(self.site, self.device, wire.Channel.OTA_STATE)
        self.client.publish(topic, wire.encode(state), qos=1, retain=True)

    def _agent_pid(self) -> int | None:
        try:
            return int(self.agent_pid_file.read_text().strip()) if self.agent_pid_file else None
        except (OSError, ValueError):
            return None

    def _reload_agent(self) -> bool:
        """SIGHUP the agent, then watch it: False when it died or was restarted (a crash loop)."""
        pid = self._agent_pid()
        if pid is None:
            return True
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError as exc:
            log.warning("agent not reloaded", extra={"error": str(exc)})
            return True
        deadline = time.monotonic() + self.crash_watch_s
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if not _alive(pid) or self._agent_pid() != pid:
                return False
        return True

    def handle(self, command: wire.OtaCommand) -> None:
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
                self._reload_agent()
                self._report(command.campaign, "rolled_back", model=manifest.ref, reason="asked by the hub")
                return
            if current is not None and current.version == command.version:
                self._report(command.campaign, "installed", model=current.ref)  # already there: idempotent
                return
            manifest = updater.update(command.target)
            if not self._reload_agent():
                back = updater.revert()
                self._reload_agent()
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

    def run(self, stop: threading.Event) -> None:
        ModelUpdater(self.ota_dir, self.repo_url).recover()  # a power cut during the last update
        self.client.connect_async(self._broker.host, self._broker.port, keepalive=self._broker.keepalive)
        self.client.loop_start()
        try:
            while not stop.is_set():
                try:
                    command = self.commands.get(timeout=0.5)
                except queue.Empty:
                    continue
                self.handle(command)
        finally:
            self.client.loop_stop()
            self.client.disconnect()


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True
