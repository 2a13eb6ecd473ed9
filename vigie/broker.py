"""Start a local MQTT broker for the demo and the tests: Mosquitto, else amqtt.

Both are bound to 127.0.0.1 only (amqtt would bind 0.0.0.0 by default).
amqtt speaks MQTT 3.1.1 only: no v5, no shared subscriptions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from vigie.exceptions import VigieError
from vigie.netutil import wait_for_port

__all__ = ["LocalBroker", "find_mosquitto", "start_broker"]


@dataclass
class LocalBroker:
    """A broker process we started and must stop."""

    kind: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary (Debian puts it in /usr/sbin, often not on PATH)."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).is_file()), None
    )


def start_broker(
    workdir: Path,
    port: int,
    *,
    prefer: str = "mosquitto",
    password_file: Path | None = None,
    acl_file: Path | None = None,
    host: str = "127.0.0.1",
    max_queued_messages: int = 100_000,
) -> LocalBroker:
    """Start a broker on ``host``:``port`` with its files under ``workdir``.

    ``max_queued_messages`` bounds what Mosquitto keeps for a subscriber that is
    behind (the hub); beyond it Mosquitto drops messages it has already
    acknowledged to the publisher, which the devices' receipts then recover.

    Raises:
        VigieError: when no broker can be started (the message says what to install).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "broker.log"
    mosquitto = find_mosquitto() if prefer == "mosquitto" else None
    if mosquitto:
        conf = workdir / "mosquitto.conf"
        # Run as root, Mosquitto drops to the `mosquitto` user, which cannot write a private
        # working folder (pytest's are mode 0700): no log and, worse, no persistence, so
        # sessions and queued messages would not survive a broker restart. This broker is
        # ours, local and short-lived: keep our own user.
        stay = "user root\n" if os.geteuid() == 0 else ""
        auth = "allow_anonymous true\n"
        if password_file is not None:
            # The client id is the username, as on production's device listener (issue 17): a
            # client cannot connect under another's id and disconnect it (the hub's, a camera's).
            auth = f"allow_anonymous false\npassword_file {password_file}\nuse_username_as_clientid true\n"
        if acl_file is not None:
            auth += f"acl_file {acl_file}\n"
        conf.write_text(
            stay + f"listener {port} {host}\n" + auth + "persistence true\n"
            f"persistence_location {workdir}/\n"
            f"max_queued_messages {max_queued_messages}\n"
            # A wire message is at most 8 KiB: a bigger packet is refused at the broker.
            "max_packet_size 16384\n"
            f"log_dest file {log_path}\n"
        )
        cmd = [mosquitto, "-c", str(conf)]
        kind = "mosquitto"
    else:
        amqtt = shutil.which("amqtt") or str(Path(sys.executable).parent / "amqtt")
        if not Path(amqtt).exists():
            raise VigieError(
                "no MQTT broker available: install Mosquitto (`sudo apt-get install mosquitto`) "
                "or the embedded one (`pip install 'vigie[hub]'`, which brings amqtt)"
            )
        conf = workdir / "amqtt.yaml"
        conf.write_text(
            "listeners:\n  default:\n    type: tcp\n"
            f"    bind: {host}:{port}\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
        )
        cmd = [amqtt, "-c", str(conf)]
        kind = "amqtt"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    broker = LocalBroker(kind, port, proc, log_path)
    if not wait_for_port(port, host=host, timeout=15):
        broker.stop()
        raise VigieError(f"{kind} did not start on {host}:{port}; see {log_path}")
    return broker
