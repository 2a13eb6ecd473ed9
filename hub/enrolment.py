"""Device enrolment: one-time tokens, certificate requests, revocation.

The flow (docs/enrolment.md):

1. a technician creates a token for a site and hardware profile
   (``vigie hub enrol-token create``); the hub keeps only its SHA-256;
2. the device makes its own key, sends a CSR with the token to ``POST /v1/enrol``;
3. the hub spends the token, signs the CSR for ``<site>/<device>``, records the
   device, rewrites the broker's ACL and reloads it, and answers with the
   certificate, the CA certificate, the TUF root for OTA and where the broker is;
4. ``vigie hub revoke SITE/DEVICE`` puts the serial in the CRL and takes the
   device out of the ACL: the broker refuses its next handshake.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.broker_config import BrokerLayout, refresh_broker
from hub.pki import DeviceCA
from hub.storage import Store
from vigie import wire
from vigie.exceptions import EnrolmentError, VigieError
from vigie.firmware import known_profiles

__all__ = [
    "EnrolmentResult",
    "EnrolmentService",
    "HubState",
    "hash_token",
    "parse_device_ref",
    "parse_duration",
]

log = logging.getLogger(__name__)

TOKEN_PREFIX = "vgt_"  # noqa: S105 (a prefix that makes leaked tokens easy to grep for, not a secret)
_DURATION = re.compile(r"^(\d+)([smhd])$")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``24h``, ``7d`` → seconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(f"duration {text!r}: write it as a number and a unit, e.g. 30m, 24h or 7d")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def parse_device_ref(text: str) -> tuple[str, str]:
    """``site/device`` → (site, device), with a clear error otherwise."""
    site, sep, device = text.partition("/")
    if not sep:
        raise ValueError(f"device {text!r}: write it as SITE/DEVICE, e.g. vieux-port/cam-3")
    wire.topic(site, device, wire.Channel.EVENT)  # raises WireError on bad slugs
    return site, device


@dataclass(frozen=True)
class HubState:
    """The hub's state folder: ``pki/`` (device CA), ``ota/`` (TUF repository), ``broker/``."""

    folder: Path
    broker_host: str = "localhost"
    tls_port: int = 8883
    tls_bind: str = "0.0.0.0"
    local_port: int = 1884
    broker_reload: str | None = None
    broker_user: str | None = None

    @property
    def pki(self) -> Path:
        return self.folder / "pki"

    @property
    def ota(self) -> Path:
        return self.folder / "ota"

    @property
    def layout(self) -> BrokerLayout:
        return BrokerLayout(
            self.folder / "broker",
            tls_port=self.tls_port,
            tls_bind=self.tls_bind,
            local_port=self.local_port,
            reload_command=self.broker_reload,
            run_as=self.broker_user,
        )

    @property
    def default_offline_keys(self) -> Path:
        """Where ``init`` puts the TUF root and targets keys unless told: beside the state folder,
        never in it (``/var/lib/vigie-hub`` → ``/var/lib/vigie-hub-offline-keys``), to be moved off
        the hub (docs/security.md, the signing ceremony)."""
        folder = self.folder.absolute()
        return folder.with_name(folder.name + "-offline-keys")

    def init(
        self, broker_hosts: list[str], *, offline_keys: Path | None = None, dev_online_keys: bool = False
    ) -> Path | None:
        """Create the CA (with the broker's certificate for ``broker_hosts``) and the TUF repository.

        The TUF root and targets keys go to ``offline_keys`` (default :attr:`default_offline_keys`),
        a folder outside the state folder that the operator moves to a medium kept off the hub; the
        hub keeps snapshot and timestamp only. ``dev_online_keys`` keeps all four here (the demo and
        tests, never production). Returns where the root and targets keys are (None: online).

        Raises:
            VigieError: the offline folder is inside the state folder, or holds TUF keys already.
        """
        from ota.repository import OFFLINE_ROLES, init_repository, take_offline

        medium = None if dev_online_keys else (offline_keys or self.default_offline_keys).absolute()
        if medium is not None and (medium.is_relative_to(self.folder.absolute())
                                   or self.folder.absolute().is_relative_to(medium)):  # fmt: skip
            raise VigieError(
                f"--offline-keys {medium}: the TUF root and targets keys must be kept outside the hub's "
                f"state folder {self.folder}; give a folder beside it or on a removable medium"
            )
        # Checked before anything is made: a half-made hub could not be initialised again.
        for role in OFFLINE_ROLES:
            if medium is not None and (medium / f"{role}.pem").exists():
                raise VigieError(
                    f"{medium / role}.pem exists: this folder already holds TUF keys (another hub's?); "
                    "give an empty folder with --offline-keys DIR"
                )
        # Private to the hub's user (issue 17); group-readable only when Mosquitto runs as another
        # account (VIGIE_HUB_BROKER_USER), which must reach broker/ and the broker's files in pki/.
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o750 if self.broker_user else 0o700)
        DeviceCA.init(self.pki, broker_hosts=broker_hosts)
        init_repository(self.ota)
        (self.ota / "keys").chmod(0o700)
        if medium is not None:
            take_offline(self.ota, medium)
        return medium


@dataclass(frozen=True)
class EnrolmentResult:
    """What the device receives."""

    site: str
    device: str
    profile: str
    certificate: str
    ca: str
    tuf_root: dict[str, Any] | None
    broker_host: str
    broker_port: int


class EnrolmentService:
    """Tokens, enrolment and revocation against one store and one state folder."""

    def __init__(self, store: Store, state: HubState) -> None:
        self.store = store
        self.state = state
        self.ca = DeviceCA.load(state.pki)

    def create_token(
        self,
        site: str,
        profile: str,
        *,
        device: str | None = None,
        ttl_s: float = 86_400,
        now: float | None = None,
    ) -> str:
        """A new single-use token (shown once; only its hash is stored)."""
        wire.topic(site, device or "x", wire.Channel.EVENT)
        profiles = known_profiles()
        if profile not in profiles:
            raise EnrolmentError(
                f"profile {profile!r} is not a hardware profile; choose one of {', '.join(profiles)}"
            )
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = time.time() if now is None else now
        self.store.add_enrol_token(hash_token(token), site, profile, device, now, now + ttl_s)
        log.info("enrolment token created", extra={"site": site, "profile": profile, "device": device})
        return token

    def enrol(
        self, token: str, site: str, device: str, csr_pem: bytes, *, now: float | None = None
    ) -> EnrolmentResult:
        """Spend ``token``, sign ``csr_pem`` for ``site/device`` and update the broker.

        Raises:
            EnrolmentError: the reason, in words a technician can act on.
        """
        wire.topic(site, device, wire.Channel.EVENT)
        now = time.time() if now is None else now

        def issue(token_site: str, dev: str) -> tuple[str, str, float]:
            if token_site != site:
                raise EnrolmentError(f"site: this token is for site {token_site!r}, not {site!r}")
            cert = self.ca.sign_csr(csr_pem, token_site, dev)
            issued.append(cert.pem)
            return format(cert.serial, "x"), cert.fingerprint, cert.not_after.timestamp()

        issued: list[bytes] = []
        record = self.store.enrol_device(hash_token(token), device, now, issue)
        refresh_broker(self.store, self.ca, self.state.layout)
        root_path = self.state.ota / "metadata" / "root.json"
        tuf_root = json.loads(root_path.read_text()) if root_path.exists() else None
        log.info("device enrolled", extra={"site": site, "device": device, "serial": record["serial"]})
        return EnrolmentResult(
            site=site,
            device=device,
            profile=record["profile"],
            certificate=issued[0].decode(),
            ca=self.ca.ca_pem.decode(),
            tuf_root=tuf_root,
            broker_host=self.state.broker_host,
            broker_port=self.state.tls_port,
        )

    def revoke(self, site: str, device: str, *, now: float | None = None) -> str:
        """Revoke ``site/device``; returns the revoked serial.

        Raises:
            EnrolmentError: when the device was never enrolled.
        """
        serial = self.store.revoke_device(site, device, time.time() if now is None else now)
        if serial is None:
            raise EnrolmentError(f"{site}/{device} is not enrolled; `vigie hub devices` lists those that are")
        refresh_broker(self.store, self.ca, self.state.layout)
        log.info("device revoked", extra={"site": site, "device": device, "serial": serial})
        return serial
