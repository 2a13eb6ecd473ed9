"""The agent takes OTA campaign commands on its own MQTT connection.

The broker binds each client id to the device's identity (``use_username_as_clientid``), so a
second process under the same certificate (``vigie edge ota-listen``) would get the agent's
client id and the two would disconnect each other in turn. The agent's link therefore
subscribes to the device's OTA topic itself and hands each command to
:class:`edge.ota.commands.OtaCommands`, the code ``ota-listen`` runs, in a worker thread: the
frame loop never waits for a download or a smoke test. After a switch the worker asks the
frame loop to reload (as SIGHUP does) and waits until the new slot's detector runs.

On when the agent has an OTA folder and knows the repository: ``ota_repo`` (``--ota-repo``,
``VIGIE_OTA_REPO``), else the hub URL recorded at enrolment (``broker.json``) + ``/ota``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from edge.ota.commands import OtaCommands
from edge.ota.slots import SlotLayout
from vigie import wire

if TYPE_CHECKING:
    from edge.agent import Agent
    from edge.config import AgentConfig

__all__ = ["RELOAD_TIMEOUT_S", "ota_commands", "ota_repo", "reload_onto_live_slot"]

log = logging.getLogger(__name__)
#: How long the worker waits for the frame loop to run the new slot before calling the update failed.
RELOAD_TIMEOUT_S = 20.0


def ota_repo(config: AgentConfig) -> str | None:
    """The TUF repository's URL: configured, else the enrolment's hub + ``/ota``, else None."""
    if config.ota_repo:
        return config.ota_repo
    cert = config.broker.tls_cert
    if cert is None:
        return None
    from edge.cert_renewal import hub_of

    hub = hub_of(cert.parent)
    return f"{hub.rstrip('/')}/ota" if hub else None


def ota_commands(agent: Agent) -> OtaCommands | None:
    """The agent's OTA worker (not started), or None when OTA commands are off for it."""
    config = agent.config
    if config.ota_dir is None:
        return None
    repo = ota_repo(config)
    if repo is None:
        log.warning(
            "OTA campaign commands not taken: no repository known (give --ota-repo or VIGIE_OTA_REPO, "
            "or enrol the device); the live slot's model still runs",
            extra={"ota_dir": str(config.ota_dir)},
        )
        return None
    log.info("OTA campaign commands taken on the agent's connection", extra={"repo": repo})
    return OtaCommands(
        config.site,
        config.device,
        config.ota_dir,
        repo,
        publish=lambda state: agent.link.publish_retained(wire.Channel.OTA_STATE, state),
        reload_agent=lambda: reload_onto_live_slot(agent),
    )


def reload_onto_live_slot(agent: Agent, timeout_s: float = RELOAD_TIMEOUT_S) -> bool:
    """Have the frame loop reload; True once its detector comes from the OTA folder's live slot.

    False when that did not happen within ``timeout_s`` (the new model refused at reload, the
    camera giving no frame, the agent stopping): the caller then goes back to the previous slot.
    A crash of the whole process is the hub's to see (heartbeats' uptime: its crash-loop gate).
    """
    if agent.config.ota_dir is None:
        return False
    want = SlotLayout(agent.config.ota_dir).live_slot()
    before = agent.reloads
    agent.control.reload.set()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not agent.control.stop.is_set():
        if agent.reloads > before and agent.live_slot == want:
            return True
        time.sleep(0.1)
    log.warning("the agent did not reload onto the new slot", extra={"slot": str(want)})
    return False
