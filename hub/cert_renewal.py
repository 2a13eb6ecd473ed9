"""Certificates that renew themselves: device certificates on request, the broker's on a schedule.

A device renews its certificate well before it expires (``edge/cert_renewal.py``): it sends its
current certificate and a certificate request signed by **the same key**. The request's signature
proves it holds the key the current certificate names, so the pair authenticates it like the
mutual-TLS handshake it makes with the broker; nothing secret travels and a replayed pair only
yields a certificate for a key the replayer does not have. The hub checks that the certificate is
its CA's, unexpired, unrevoked, one it issued to that enrolled device (its current one, or an
earlier one when the answer to a renewal was lost), then signs the same key for another 825 days.
Every certificate a device renewed from or to is recorded and revoked with the device; a replayed
request only mints another certificate for a key the replayer does not hold.

The broker's own certificate is re-issued by the hub's periodic check (``hub/crl_refresh.py``) once
under ``BROKER_RENEW_S`` of validity is left, and the broker reloaded.
"""

from __future__ import annotations

import datetime as dt
import logging

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from hub.pki import DeviceCA
from hub.storage import Store
from vigie.exceptions import EnrolmentError

__all__ = ["BROKER_RENEW_S", "broker_cert_due", "renew_broker_certificate", "renew_device_certificate"]

log = logging.getLogger(__name__)

#: The broker's certificate is re-issued once it has less than this left (90 days).
BROKER_RENEW_S = 90 * 86400.0


def _device_identity(cert: x509.Certificate) -> tuple[str, str]:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    site, sep, device = str(names[0].value).partition("/") if names else ("", "", "")
    if not sep:
        raise EnrolmentError("certificate: not a device certificate (its CN is not SITE/DEVICE)")
    return site, device


def renew_device_certificate(
    store: Store, ca: DeviceCA, cert_pem: bytes, csr_pem: bytes, now: float
) -> bytes:
    """A new certificate for the key of ``cert_pem``; the PEM.

    Raises:
        EnrolmentError: the reason in words (not ours, expired, revoked, replaced, another key).
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise EnrolmentError(
            "certificate or csr: not PEM (-----BEGIN CERTIFICATE----- / REQUEST-----)"
        ) from None
    try:
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        raise EnrolmentError("certificate: not issued by this hub's device CA") from None
    site, device = _device_identity(cert)
    when = dt.datetime.fromtimestamp(now, dt.UTC)
    if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
        raise EnrolmentError(
            f"certificate: {site}/{device}'s certificate is not valid now (until "
            f"{cert.not_valid_after_utc:%Y-%m-%d}); an expired certificate cannot renew itself: enrol the "
            "device again"
        )
    if not csr.is_signature_valid:
        raise EnrolmentError("csr: its signature does not match its public key")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if csr.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise EnrolmentError("csr: not signed by the certificate's key; renew with the same key")
    issued: list[bytes] = []

    def issue() -> tuple[str, str, float]:
        new = ca.sign_csr(csr_pem, site, device)
        issued.append(new.pem)
        return format(new.serial, "x"), new.fingerprint, new.not_after.timestamp()

    problem = store.renew_enrolment(site, device, format(cert.serial_number, "x"), issue)
    if problem is not None:
        raise EnrolmentError(f"renewal refused: {problem}")
    log.info("device certificate renewed", extra={"site": site, "device": device})
    return issued[0]


def broker_cert_due(ca: DeviceCA, now: float, keep_s: float = BROKER_RENEW_S) -> bool:
    """True when the broker's certificate is missing, unreadable or under ``keep_s`` from expiry."""
    try:
        cert = x509.load_pem_x509_certificate((ca.folder / "broker.crt").read_bytes())
    except (OSError, ValueError):
        return True
    return cert.not_valid_after_utc.timestamp() - now < keep_s


def renew_broker_certificate(ca: DeviceCA) -> list[str]:
    """Re-issue the broker's certificate for the host names of the current one; returns them."""
    cert = x509.load_pem_x509_certificate((ca.folder / "broker.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    hosts = [str(n.value) for n in names]
    ca.issue_broker_certificate(hosts)
    log.info("broker certificate renewed", extra={"hosts": hosts})
    return hosts
