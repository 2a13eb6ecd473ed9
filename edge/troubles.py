"""What is wrong with this box, said once: the cause, since when, and when the agent tries again.

An agent that cannot reach its broker used to retry in silence (paho logs its failures at
DEBUG without the cause). Here each kind of trouble (``broker``, ``certificate``, ``disk``,
``camera``) is logged at WARNING when it starts or its cause changes, then at most once every
``remind_s`` with the number of attempts (not silent, not one line per retry), and once more
when it clears. The same facts go into the heartbeat (once it can be sent) and into the status
file that ``vigie edge status`` reads on site (:mod:`edge.status`).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["Kind", "Trouble", "Troubles", "explain_connect_error"]

log = logging.getLogger(__name__)

Kind = Literal["broker", "certificate", "disk", "camera"]


@dataclass
class Trouble:
    """One kind of trouble as it stands now."""

    kind: Kind
    cause: str
    since: float
    attempts: int = 1
    next_retry_at: float | None = None
    logged_at: float = 0.0


def explain_connect_error(exc: BaseException, host: str, port: int) -> tuple[Kind, str]:
    """Say, in words a technician can act on, why connecting to the broker failed (pure)."""
    where = f"{host}:{port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "certificate", f"the broker's certificate at {where} was refused: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        text = exc.reason or str(exc)
        if "CERTIFICATE" in text.upper():
            # The broker's TLS alert: this device's certificate is revoked, expired or unknown.
            return "certificate", f"the broker at {where} refused this device's certificate ({text})"
        return "broker", f"TLS handshake with {where} failed ({text})"
    if isinstance(exc, ConnectionRefusedError):
        return (
            "broker",
            f"nothing accepts connections at {where} (connection refused): is the broker running?",
        )
    if isinstance(exc, socket.gaierror):
        return "broker", f"cannot resolve the broker's name {host!r} ({exc.strerror}): check DNS or --broker"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "broker", f"no answer from {where} (timed out): network, firewall or modem down?"
    return "broker", f"cannot connect to {where}: {exc.strerror or exc}" if isinstance(exc, OSError) else str(
        exc
    )


class Troubles:
    """The box's current troubles; thread-safe (paho's thread, the agent loop, the sensors)."""

    def __init__(
        self,
        on_change: Callable[[], None] | None = None,
        *,
        remind_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._on_change = on_change
        self.remind_s = remind_s
        self._clock = clock
        self._lock = threading.Lock()
        self._now: dict[Kind, Trouble] = {}
        self._cleared: dict[Kind, Trouble] = {}  # cleared since the last heartbeat took them

    def report(self, kind: Kind, cause: str, *, next_retry_at: float | None = None) -> None:
        """Record one failure; logs when it is new, its cause changed, or every ``remind_s``."""
        now = self._clock()
        with self._lock:
            old = self._now.get(kind)
            new = old is None or old.cause != cause
            if new:
                trouble = Trouble(kind, cause, now, next_retry_at=next_retry_at)
                self._now[kind] = trouble
            else:
                assert old is not None
                trouble = old
                trouble.attempts += 1
                trouble.next_retry_at = next_retry_at
            due = new or now - trouble.logged_at >= self.remind_s
            if due:
                trouble.logged_at = now
        if due:
            retry = "" if next_retry_at is None else f"; next try in {max(0.0, next_retry_at - now):.0f} s"
            extra = {
                "trouble": kind,
                "cause": cause,
                "attempts": trouble.attempts,
                "next_retry_at": None if next_retry_at is None else round(next_retry_at),
            }
            log.warning(f"{kind}: {cause}{retry}", extra=extra)
        if new and self._on_change is not None:
            self._on_change()

    def clear(self, kind: Kind) -> None:
        """The trouble is over: say so once."""
        with self._lock:
            gone = self._now.pop(kind, None)
            if gone is not None:
                self._cleared[kind] = gone
        if gone is not None:
            took = self._clock() - gone.since
            log.warning(
                f"{kind}: recovered after {took:.0f} s", extra={"trouble": kind, "attempts": gone.attempts}
            )
            if self._on_change is not None:
                self._on_change()

    def active(self) -> dict[str, dict[str, Any]]:
        """The current troubles, as the status file shows them."""
        with self._lock:
            return {k: {n: v for n, v in asdict(t).items() if n not in ("kind", "logged_at")}
                    for k, t in self._now.items()}  # fmt: skip

    def for_heartbeat(self) -> dict[Kind, str]:
        """Current troubles and those cleared since the last call: why the hub did not hear from the box."""
        with self._lock:
            out = {k: t.cause[:200] for k, t in self._cleared.items()}
            out.update({k: t.cause[:200] for k, t in self._now.items()})
            self._cleared.clear()
        return out
