"""Keep the revocation list valid: rewrite it on a schedule, far inside its 30-day validity.

The CRL used to be written only at hub start, enrolment and revocation: a hub that ran 31
days with none of those published an expired CRL, and Mosquitto then refused every device
(issue 21). This job checks every ``every_s`` (6 h) and rewrites the CRL, the ACL and the
broker configuration, then reloads the broker, once under ``keep_s`` (23 days) of validity
is left, i.e. about weekly. Several hub workers may each run it: the writes are atomic and
the same registry gives the same files.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from cryptography import x509

from hub.broker_config import BrokerLayout, refresh_broker
from hub.pki import DeviceCA
from hub.storage import Store

__all__ = ["CrlRefresher", "crl_due"]

log = logging.getLogger(__name__)


def crl_due(next_update: float | None, now: float, keep_s: float) -> bool:
    """True when the CRL must be rewritten: missing, unreadable, or under ``keep_s`` of validity left."""
    return next_update is None or next_update - now < keep_s


def _next_update(path: Path) -> float | None:
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except (OSError, ValueError):
        return None
    nxt = crl.next_update_utc
    return nxt.timestamp() if nxt is not None else None


class CrlRefresher:
    """A daemon thread that calls :func:`hub.broker_config.refresh_broker` when the CRL runs low."""

    def __init__(
        self, store: Store, ca: DeviceCA, layout: BrokerLayout, *, every_s: float = 6 * 3600,
        keep_s: float = 23 * 86400,
    ) -> None:  # fmt: skip
        self.store, self.ca, self.layout = store, ca, layout
        self.every_s, self.keep_s = every_s, keep_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="crl-refresh", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def run_once(self, now: float | None = None) -> bool:
        """Rewrite the CRL if it is due (and the broker's certificate if it is); True when it was."""
        from hub.cert_renewal import broker_cert_due, renew_broker_certificate

        now = time.time() if now is None else now
        broker_due = broker_cert_due(self.ca, now)
        if broker_due:
            renew_broker_certificate(self.ca)  # the reload below makes the broker use it
        if not broker_due and not crl_due(_next_update(self.ca.folder / "crl.pem"), now, self.keep_s):
            return False
        refresh_broker(self.store, self.ca, self.layout)
        log.info("revocation list refreshed", extra={"next_update": _next_update(self.ca.folder / "crl.pem")})
        return True

    def _run(self) -> None:
        while True:  # at start too: a hub started after months off renews the broker's certificate
            try:
                self.run_once()
            except Exception:  # retried at the next check, days before the CRL expires
                log.exception("revocation list refresh failed")
            if self._stop.wait(self.every_s):
                return
