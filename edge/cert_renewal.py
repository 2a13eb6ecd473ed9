"""The device renews its own certificate, months before it expires: no technician on the lamp post.

Every ``CHECK_S`` (12 h) :class:`CertRenewer` reads ``device.crt``'s not-after; once under
``RENEW_BEFORE_S`` (180 days of its 825) are left it makes a certificate request **with the same
key** and sends it with the current certificate to the hub's ``POST /v1/renew``
(``hub/cert_renewal.py``): the request's signature proves it holds the certificate's key, as
its mutual-TLS handshake with the broker does. The new certificate replaces the file atomically;
the MQTT link loads it at its next connection (``edge/link.py``). A failure is logged and
retried at the next check: 180 days leave about 360 tries.

The hub's address is the one the device enrolled with (``broker.json``'s ``hub``, written by
``vigie edge enrol``), or ``--hub``.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge.enrol import check_hub_url, make_csr
from vigie.exceptions import EnrolmentError
from vigie.files import write_atomic

__all__ = ["CHECK_S", "RENEW_BEFORE_S", "CertRenewer", "hub_of", "renew_certificate", "renewal_due"]

log = logging.getLogger(__name__)

RENEW_BEFORE_S = 180 * 86400.0
CHECK_S = 12 * 3600.0


def renewal_due(not_after: float, now: float, before_s: float = RENEW_BEFORE_S) -> bool:
    """True once under ``before_s`` of validity is left (or already expired). Pure."""
    return not_after - now < before_s


def hub_of(pki_dir: Path) -> str | None:
    """The hub URL the device enrolled with (``broker.json``), if recorded."""
    try:
        hub = json.loads((pki_dir / "broker.json").read_text()).get("hub")
    except (OSError, ValueError):
        return None
    return hub if isinstance(hub, str) else None


def renew_certificate(
    pki_dir: Path,
    hub_url: str,
    *,
    now: float | None = None,
    before_s: float = RENEW_BEFORE_S,
    timeout_s: float = 30,
) -> bool:
    """Renew ``pki_dir/device.crt`` if due; True when a new certificate was installed.

    Raises:
        EnrolmentError: the hub refused (its reason) or could not be reached.
    """
    check_hub_url(hub_url)
    cert_path = pki_dir / "device.crt"
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    now = time.time() if now is None else now
    if not renewal_due(cert.not_valid_after_utc.timestamp(), now, before_s):
        return False
    key = serialization.load_pem_private_key((pki_dir / "device.key").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise EnrolmentError(f"{pki_dir / 'device.key'}: expected the EC key the device enrolled with")
    site, _, device = str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value).partition("/")
    csr = make_csr(key, site, device)
    body = json.dumps({"certificate": cert_path.read_text(), "csr": csr.decode()}).encode()
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        hub_url.rstrip("/") + "/v1/renew",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    cafile = pki_dir / "hub-ca.crt"
    context = ssl.create_default_context(cafile=str(cafile)) if cafile.exists() else None
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:  # noqa: S310
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", exc.reason)
        except ValueError:
            detail = exc.reason
        raise EnrolmentError(
            f"hub refused to renew {site}/{device}'s certificate (HTTP {exc.code}): {detail}"
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise EnrolmentError(f"hub {hub_url} unreachable: {getattr(exc, 'reason', exc)}") from None
    new = x509.load_pem_x509_certificate(answer["certificate"].encode())
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if new.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise EnrolmentError("the hub returned a certificate for another key; not installed")
    write_atomic(cert_path, answer["certificate"].encode())
    log.info(
        "certificate renewed",
        extra={"site": site, "device": device, "not_after": new.not_valid_after_utc.isoformat()},
    )
    return True


class CertRenewer:
    """A daemon thread: :func:`renew_certificate` every ``check_s`` (and once at start)."""

    def __init__(
        self, pki_dir: Path, hub_url: str, *, check_s: float = CHECK_S, before_s: float = RENEW_BEFORE_S
    ) -> None:
        self.pki_dir, self.hub_url, self.check_s, self.before_s = pki_dir, hub_url, check_s, before_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cert-renewal", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while True:
            try:
                renew_certificate(self.pki_dir, self.hub_url, before_s=self.before_s)
            except (EnrolmentError, OSError, ValueError) as exc:
                log.warning("certificate renewal failed; next try in %.0f h: %s", self.check_s / 3600, exc)
            if self._stop.wait(self.check_s):
                return
