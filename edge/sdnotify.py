"""systemd's notify protocol (sd_notify) without a dependency: READY, WATCHDOG, STATUS, RELOADING.

Under `Type=notify` with `WatchdogSec=`, systemd restarts the agent when it
stops sending WATCHDOG=1, which a frozen capture or inference loop would.
Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time

__all__ = ["Notifier"]


class Notifier:
    """Sends state lines to ``$NOTIFY_SOCKET`` and paces watchdog pings."""

    def __init__(self, socket_path: str | None = None) -> None:
        path = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET", "")
        self._addr = "\0" + path[1:] if path.startswith("@") else path  # '@' is the abstract namespace
        usec = os.environ.get("WATCHDOG_USEC", "")
        # Ping at half the watchdog period, as systemd recommends.
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self._addr)

    def notify(self, *lines: str) -> bool:
        """Send ``KEY=value`` lines; False when not under systemd or the socket is gone."""
        if not self._addr:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto("\n".join(lines).encode(), self._addr)
            except OSError:
                return False
        return True

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def reloading(self) -> None:
        self.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def watchdog(self) -> None:
        """Ping the watchdog if its half-period has passed (cheap to call every frame)."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.notify("WATCHDOG=1")
