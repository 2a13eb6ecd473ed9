"""``vigie edge ota-listen``: OTA campaign commands on a connection of its own, for a box whose
agent does not take them (no agent running, or one started without ``--ota-dir``).

The agent takes the commands itself on its own MQTT connection (:mod:`edge.agent_ota`). This
listener must not run beside an agent under the same identity: a broker that binds client ids
to identities (``use_username_as_clientid``, the hub's and the demo's) gives both the same id
and disconnects them in turn. What it does with a command is :class:`edge.ota.commands.OtaCommands`;
after a switch it sends SIGHUP to the agent's pid and watches it: an agent that dies or restarts
within ``crash_watch_s`` sends the device back to its previous model.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from edge.ota.commands import OtaCommands
from vigie import wire
from vigie.exceptions import WireError
from vigie.mqtt import BrokerConfig, make_client

__all__ = ["OtaListener"]

log = logging.getLogger(__name__)


class OtaListener(OtaCommands):
    """One device's OTA command loop on its own MQTT connection."""

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
        super().__init__(
            site, device, ota_dir, repo_url, publish=self._publish_state, reload_agent=self._reload_agent
        )
        self.agent_pid_file = agent_pid_file
        self.crash_watch_s = crash_watch_s
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
            self.submit(command)

    def _publish_state(self, state: wire.OtaState) -> None:
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

    def run(self, stop: threading.Event) -> None:
        """Connect, then apply commands until ``stop`` (a power cut's half-done update first)."""
        self.client.connect_async(self._broker.host, self._broker.port, keepalive=self._broker.keepalive)
        self.client.loop_start()
        try:
            self.serve(stop)
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
