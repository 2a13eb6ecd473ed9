"""Enrolment on the device: make a key here, send only a certificate request, keep what comes back.

Files written in the PKI folder (default ``/etc/vigie/pki``)::

    device.key   EC P-256 private key, 0600 — made here, never sent anywhere
    device.csr   the request that was sent (kept for the record)
    device.crt   the certificate from the hub (CN = site/device)
    ca.crt       the hub's device CA, which also signed the broker's certificate
    broker.json  where the broker is (host and TLS port), the hardware profile and the hub's URL
    hub-ca.crt   the CA of the hub's HTTPS certificate, when enrolment was given one (--cafile)

and the OTA trust root in the OTA folder (default ``/var/lib/vigie/ota/metadata/root.json``).
Running it again when ``device.crt`` exists does nothing (the playbooks rely on that).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge.ota.slots import SlotLayout
from vigie.exceptions import EnrolmentError
from vigie.files import write_atomic, write_private

__all__ = ["EnrolOutcome", "check_hub_url", "enrol", "make_csr"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnrolOutcome:
    """What happened: ``enrolled`` (new certificate) or ``already`` (nothing to do)."""

    state: str
    certificate: Path
    fingerprint: str


def _load_or_make_key(path: Path) -> ec.EllipticCurvePrivateKey:
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise EnrolmentError(f"{path}: expected an EC private key; delete it to make a new one")
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(path, pem)
    return key


def make_csr(key: ec.EllipticCurvePrivateKey, site: str, device: str) -> bytes:
    """A PEM CSR for ``site/device`` (the hub sets the final subject itself)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{site}/{device}")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def check_hub_url(hub_url: str) -> None:
    """The enrolment token and the CA certificate travel over this URL: https://, or http:// to loopback.

    Plain http:// to another host would let anyone on the path read the token or hand the device a
    CA of their own (issue 17); loopback is allowed for a hub and a device on one machine (tests, demo).

    Raises:
        EnrolmentError: naming the URL and what to write instead.
    """
    parts = urllib.parse.urlsplit(hub_url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return
    if parts.scheme == "http":
        raise EnrolmentError(
            f"hub URL {hub_url!r}: plain http:// is refused except to this machine (127.0.0.1, ::1, "
            f"localhost); use https://{parts.netloc}/ (docs/security.md: the hub behind TLS)"
        )
    raise EnrolmentError(f"hub URL {hub_url!r}: must start with https://, e.g. https://hub.city.example")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def enrol(
    hub_url: str,
    site: str,
    device: str,
    token: str,
    pki_dir: Path,
    ota_dir: Path | None = None,
    *,
    timeout_s: float = 30,
    cafile: Path | None = None,
) -> EnrolOutcome:
    """Enrol this device with the hub at ``hub_url`` (``https://hub.example/``).

    Raises:
        EnrolmentError: the hub refused (its reason is in the message) or could not be reached.
    """
    check_hub_url(hub_url)
    cert_path = pki_dir / "device.crt"
    if cert_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        return EnrolOutcome("already", cert_path, cert.fingerprint(hashes.SHA256()).hex())
    pki_dir.mkdir(parents=True, exist_ok=True)
    key = _load_or_make_key(pki_dir / "device.key")
    csr = make_csr(key, site, device)
    write_atomic(pki_dir / "device.csr", csr)
    body = json.dumps({"site": site, "device": device, "token": token, "csr": csr.decode()}).encode()
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        hub_url.rstrip("/") + "/v1/enrol",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    import ssl

    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:  # noqa: S310
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", exc.reason)
            if isinstance(detail, list):  # validation errors: [{"loc": [...], "msg": ...}, ...]
                detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail)
        except ValueError:
            detail = exc.reason
        raise EnrolmentError(
            f"hub refused enrolment of {site}/{device} (HTTP {exc.code}): {detail}"
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EnrolmentError(f"hub {hub_url} unreachable: {reason}; check the URL and the network") from None
    cert = x509.load_pem_x509_certificate(answer["certificate"].encode())
    if cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
        raise EnrolmentError("the hub returned a certificate for another key; not installed")
    write_atomic(pki_dir / "ca.crt", answer["ca"].encode())
    # The hub's address too: the device renews its certificate there (edge/cert_renewal.py).
    broker = {"host": answer["broker_host"], "port": answer["broker_port"], "profile": answer["profile"],
              "hub": hub_url}  # fmt: skip
    if cafile is not None:
        write_atomic(pki_dir / "hub-ca.crt", cafile.read_bytes())
    write_atomic(pki_dir / "broker.json", json.dumps(broker, indent=2).encode())
    if ota_dir is not None and answer.get("tuf_root") is not None:
        root_json = SlotLayout(ota_dir).trusted_root
        write_atomic(root_json, json.dumps(answer["tuf_root"], indent=1).encode())
    # Last: the certificate's presence is what "enrolled" means on this device.
    write_atomic(cert_path, answer["certificate"].encode())
    fp = cert.fingerprint(hashes.SHA256()).hex()
    log.info("enrolled", extra={"site": site, "device": device, "fingerprint": fp})
    return EnrolOutcome("enrolled", cert_path, fp)
