"""The hub's device certificate authority: it signs enrolment requests and publishes revocations.

Devices make their own keys and send only a certificate request (CSR); the CA
never sees a device's private key. The certificate's common name is
``<site>/<device>``, which Mosquitto takes as the MQTT username
(``use_identity_as_username``), so the ACL written by
:mod:`hub.broker_config` confines each certificate to its own topics.
Revoked serials go into a CRL that the broker checks on every handshake.

Layout of the CA folder (``vigie hub pki init DIR``)::

    private/ca.key  the CA's private key: 0600 in a 0700 folder of its own, which only the hub's
                    user reads (keep it off backups you share)
    ca.crt          the CA certificate, given to devices and to the broker
    broker.key      the broker's TLS key (0640: the broker's group reads it) and certificate,
    broker.crt      signed by the CA
    crl.pem         the current revocation list (rewritten on every revocation)

The CA folder itself is 0750: give its group to the broker's account (``chgrp mosquitto``) and
the broker reads its key, certificate and the CRL, never the CA's key (issue 17). A CA made before
``private/`` existed has ``ca.key`` at the top: :meth:`DeviceCA.load` moves it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vigie import wire
from vigie.exceptions import EnrolmentError, VigieError
from vigie.files import write_atomic, write_private

__all__ = ["DeviceCA", "IssuedCertificate", "fingerprint"]

UTC = dt.UTC
CA_DAYS = 3650
DEVICE_DAYS = 825  # the CA/Browser Forum's old ceiling: long enough for a lamp post, short enough to rotate
BROKER_DAYS = 825


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A device certificate and what the registry keeps of it."""

    pem: bytes
    serial: int
    fingerprint: str
    not_after: dt.datetime


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint as lowercase hex, as ``openssl x509 -fingerprint -sha256`` shows it (no colons)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def _key_usage(*allowed: str) -> x509.KeyUsage:
    flags = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")  # fmt: skip
    return x509.KeyUsage(**{f: f in allowed for f in flags})


def _key_path(folder: Path) -> Path:
    return folder / "private" / "ca.key"


def _make_folders(folder: Path) -> None:
    """The CA folder 0750 (the broker's group reads its files), ``private/`` 0700 (the hub's user only)."""
    (folder / "private").mkdir(parents=True, exist_ok=True)
    folder.chmod(0o750)
    (folder / "private").chmod(0o700)


def _now() -> dt.datetime:
    return dt.datetime.now(UTC)


class DeviceCA:
    """A CA folder on the hub (see the module docstring for its files)."""

    def __init__(self, folder: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.folder = folder
        self._key = key
        self.cert = cert

    # -- creation and loading ------------------------------------------------------
    @classmethod
    def init(
        cls, folder: Path, *, name: str = "Vigie device CA", broker_hosts: Iterable[str] = ()
    ) -> DeviceCA:
        """Create a new CA (and the broker's TLS certificate) in ``folder``.

        Raises:
            VigieError: when ``folder`` already holds a CA (a second CA would orphan every device).
        """
        if (folder / "ca.key").exists() or _key_path(folder).exists():
            raise VigieError(
                f"{_key_path(folder)} already exists: this folder holds a CA. "
                "Use it as it is, or choose another folder; replacing it would orphan every enrolled device."
            )
        _make_folders(folder)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Vigie"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ])  # fmt: skip
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                _key_usage("key_cert_sign", "crl_sign"),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private(_key_path(folder), key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ))  # fmt: skip
        write_atomic(folder / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
        ca = cls(folder, key, cert)
        ca.issue_broker_certificate(list(broker_hosts) or ["localhost", "127.0.0.1"])
        ca.write_crl([])
        return ca

    @classmethod
    def load(cls, folder: Path) -> DeviceCA:
        """Open an existing CA folder.

        Raises:
            VigieError: when the folder holds no CA, naming the command that makes one.
        """
        if (folder / "ca.key").exists() and not _key_path(folder).exists():
            _make_folders(folder)
            (folder / "ca.key").rename(_key_path(folder))  # same filesystem: atomic, mode kept (0600)
        try:
            key = serialization.load_pem_private_key(_key_path(folder).read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
        except FileNotFoundError:
            raise VigieError(
                f"no device CA in {folder}: create one with `vigie hub pki init {folder}`"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise VigieError(f"{_key_path(folder)}: expected an EC key, found {type(key).__name__}")
        return cls(folder, key, cert)

    @property
    def ca_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    # -- issuing ---------------------------------------------------------------------
    def _builder(self, subject: x509.Name, public_key: object, days: int) -> x509.CertificateBuilder:
        now = _now()
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(min(now + dt.timedelta(days=days), self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )

    def sign_csr(
        self, csr_pem: bytes, site: str, device: str, *, days: int = DEVICE_DAYS
    ) -> IssuedCertificate:
        """Sign a device's CSR for identity ``site/device``.

        The subject is set here, not taken from the request: a device cannot
        ask for another device's name. The CSR's signature proves that the
        requester holds the private key.

        Raises:
            EnrolmentError: unreadable CSR, bad signature or a weak key.
        """
        wire.topic(site, device, wire.Channel.EVENT)  # both are valid slugs
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError:
            raise EnrolmentError(
                "csr: not a PEM certificate request (-----BEGIN CERTIFICATE REQUEST-----)"
            ) from None
        if not csr.is_signature_valid:
            raise EnrolmentError("csr: its signature does not match its public key; make a new request")
        public = csr.public_key()
        if isinstance(public, rsa.RSAPublicKey) and public.key_size < 2048:
            raise EnrolmentError(
                f"csr: RSA key of {public.key_size} bits; use EC P-256 (the default) or RSA ≥ 2048"
            )
        if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
            raise EnrolmentError(f"csr: unsupported key type {type(public).__name__}; use EC P-256")
        subject = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Vigie"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, site),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{site}/{device}"),
        ])  # fmt: skip
        cert = (
            self._builder(subject, public, days)
            .add_extension(
                _key_usage("digital_signature", "key_agreement"),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"urn:vigie:device:{site}:{device}")]
                ),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return IssuedCertificate(
            pem=cert.public_bytes(serialization.Encoding.PEM),
            serial=cert.serial_number,
            fingerprint=fingerprint(cert),
            not_after=cert.not_valid_after_utc,
        )

    def issue_broker_certificate(self, hosts: list[str], *, days: int = BROKER_DAYS) -> None:
        """(Re)issue the broker's TLS server certificate for ``hosts`` (names or IP addresses)."""
        import ipaddress

        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        subject = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Vigie"),
            x509.NameAttribute(NameOID.COMMON_NAME, hosts[0]),
        ])  # fmt: skip
        cert = (
            self._builder(subject, key.public_key(), days)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        write_atomic(self.folder / "broker.key", mode=0o640, data=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ))  # fmt: skip
        write_atomic(self.folder / "broker.crt", cert.public_bytes(serialization.Encoding.PEM))

    def write_crl(self, revoked: Iterable[tuple[int, float]], *, days: int = 30) -> Path:
        """Write ``crl.pem`` listing ``(serial, revoked_at epoch seconds)``; returns its path.

        The CRL is valid for ``days``; the hub rewrites it at every revocation
        and on start, so an idle hub must restart (or run ``vigie hub
        broker-config``) at least that often.
        """
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=days))
        )
        for serial, when in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(dt.datetime.fromtimestamp(when, UTC))
                .build()
            )
        crl = builder.sign(self._key, hashes.SHA256())
        path = self.folder / "crl.pem"
        write_atomic(path, crl.public_bytes(serialization.Encoding.PEM))
        return path
