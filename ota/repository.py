"""The hub's TUF repository: role keys and the four top-level metadata files (python-tuf Metadata API).

Devices trust OTA updates through The Update Framework. At enrolment each
device receives ``root.json`` from here; from then on its ``ngclient.Updater``
accepts only metadata signed by the keys that root names, with rollback and
freeze protection built in.

Folder layout (``vigie hub init``)::

    keys/<role>.pem       private keys, 0600 in a 0700 folder; after ``vigie hub init`` only
                          snapshot and timestamp stay here, root and targets are in a folder of
                          their own to be kept off the hub (docs/security.md: the signing ceremony)
    metadata/1.root.json  versioned root (consistent snapshots)
    metadata/root.json    the current root, what enrolment hands out
    metadata/targets.json, snapshot.json, timestamp.json
    targets/              the files devices download
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from vigie.exceptions import VigieError
from vigie.files import write_private

__all__ = [
    "OFFLINE_ROLES",
    "ROLES",
    "init_repository",
    "list_targets",
    "load_signer",
    "publish",
    "refresh_timestamp",
    "revoke",
    "rotate_key",
    "take_offline",
]

ROLES = ("root", "targets", "snapshot", "timestamp")
#: The keys that may leave the hub: they sign rarely, and whoever holds them decides what devices run.
OFFLINE_ROLES = ("root", "targets")
#: How long each role's metadata is valid when (re)signed: the short-lived timestamp is what
#: defeats freeze attacks; root and targets change rarely and are signed with care.
EXPIRY_DAYS = {"root": 365, "targets": 90, "snapshot": 7, "timestamp": 1}


def _expiry(role: str) -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=EXPIRY_DAYS[role])


def _key_path(folder: Path, role: str, keys: Path | None) -> Path:
    """Where ``role``'s private key is: ``folder/keys``, else the offline folder (``keys``, or
    ``VIGIE_OTA_OFFLINE_KEYS``) when it holds it there.

    Raises:
        VigieError: the key is in neither place, naming what to do.
    """
    online = folder / "keys" / f"{role}.pem"
    offline_dir = keys or (
        Path(os.environ["VIGIE_OTA_OFFLINE_KEYS"]) if os.environ.get("VIGIE_OTA_OFFLINE_KEYS") else None
    )
    if online.exists():
        return online
    if offline_dir is not None and (offline_dir / f"{role}.pem").exists():
        return offline_dir / f"{role}.pem"
    raise VigieError(
        f"the TUF {role} key is not in {folder / 'keys'}"
        + (f" nor in {offline_dir}" if offline_dir else "")
        + f": it is kept offline; mount the medium that holds {role}.pem and pass its folder with "
        "--keys DIR (or set VIGIE_OTA_OFFLINE_KEYS) (docs/security.md, the signing ceremony)"
    )


def load_signer(folder: Path, role: str, keys: Path | None = None) -> CryptoSigner:
    """The signer for ``role`` from ``folder/keys/<role>.pem``, else from the offline folder.

    Root and targets keys live offline (``vigie hub init`` puts them in a folder of their own, issue
    17): mount the medium for the ceremony and name it with ``keys`` or ``VIGIE_OTA_OFFLINE_KEYS``
    (docs/security.md).

    Raises:
        VigieError: the key is neither online nor in the offline folder, naming what to do.
    """
    key = serialization.load_pem_private_key(_key_path(folder, role, keys).read_bytes(), password=None)
    return CryptoSigner(key)


def take_offline(folder: Path, medium: Path, roles: tuple[str, ...] = OFFLINE_ROLES) -> list[Path]:
    """Move the ``roles``' private keys from ``folder/keys`` to ``medium`` (0700; keys 0600).

    Copied, synced, then removed from the hub (the medium is often another filesystem). Returns
    where they are now. The hub keeps snapshot and timestamp, which it re-signs every day.

    Raises:
        VigieError: ``medium`` already holds one of these keys (another hub's, perhaps): never
            overwritten.
    """
    taken = [medium / f"{role}.pem" for role in roles if (medium / f"{role}.pem").exists()]
    if taken:
        raise VigieError(
            f"{taken[0]} exists: this folder already holds TUF keys (another hub's?); choose an empty "
            "folder for the offline keys (vigie hub init --offline-keys DIR)"
        )
    medium.mkdir(parents=True, exist_ok=True, mode=0o700)
    medium.chmod(0o700)
    moved = []
    for role in roles:
        key = folder / "keys" / f"{role}.pem"
        write_private(medium / key.name, key.read_bytes())
        key.unlink()
        moved.append(medium / key.name)
    return moved


def init_repository(folder: Path) -> Path:
    """Create keys and version-1 metadata for all four roles; returns the path of ``root.json``.

    Refuses to overwrite an existing repository (a new root would strand every device).
    """
    meta = folder / "metadata"
    if (meta / "root.json").exists():
        raise FileExistsError(f"{meta}/root.json exists: this folder already holds a TUF repository")
    meta.mkdir(parents=True, exist_ok=True)
    (folder / "targets").mkdir(exist_ok=True)
    signers = {role: CryptoSigner.generate_ed25519() for role in ROLES}
    for role, signer in signers.items():
        write_private(folder / "keys" / f"{role}.pem", signer.private_bytes)

    root = Root(expires=_expiry("root"))
    for role, signer in signers.items():
        root.add_key(signer.public_key, role)
    documents: dict[str, Metadata[Any]] = {
        "root": Metadata(root),
        "targets": Metadata(Targets(expires=_expiry("targets"))),
    }
    snapshot = Snapshot(expires=_expiry("snapshot"))
    snapshot.meta["targets.json"] = MetaFile(version=1)
    documents["snapshot"] = Metadata(snapshot)
    timestamp = Timestamp(expires=_expiry("timestamp"))
    timestamp.snapshot_meta = MetaFile(version=1)
    documents["timestamp"] = Metadata(timestamp)

    serializer = JSONSerializer(compact=False)
    for role, md in documents.items():
        md.sign(signers[role])
        md.to_file(str(meta / f"{role}.json"), serializer)
    documents["root"].to_file(str(meta / "1.root.json"), serializer)
    return meta / "root.json"


def _load(meta: Path, role: str) -> Metadata[Any]:
    return Metadata.from_file(str(meta / f"{role}.json"))


def _write(meta: Path, md: Metadata[Any], role: str, *, versioned: bool) -> None:
    serializer = JSONSerializer(compact=False)
    if versioned:
        md.to_file(str(meta / f"{md.signed.version}.{role}.json"), serializer)
    md.to_file(str(meta / f"{role}.json"), serializer)


def _resign_chain(
    folder: Path, targets: Metadata[Any] | None = None, keys: Path | None = None
) -> tuple[int, int, int]:
    """Bump and sign targets (when given), snapshot and timestamp; returns their versions."""
    meta = folder / "metadata"
    if targets is not None:
        targets.signed.version += 1
        targets.signed.expires = _expiry("targets")
        targets.sign(load_signer(folder, "targets", keys))
        _write(meta, targets, "targets", versioned=True)
    else:
        targets = _load(meta, "targets")
    snapshot = _load(meta, "snapshot")
    snapshot.signed.meta["targets.json"] = MetaFile(version=targets.signed.version)
    snapshot.signed.version += 1
    snapshot.signed.expires = _expiry("snapshot")
    snapshot.sign(load_signer(folder, "snapshot"))
    _write(meta, snapshot, "snapshot", versioned=True)
    timestamp = _load(meta, "timestamp")
    timestamp.signed.snapshot_meta = MetaFile(version=snapshot.signed.version)
    timestamp.signed.version += 1
    timestamp.signed.expires = _expiry("timestamp")
    timestamp.sign(load_signer(folder, "timestamp"))
    _write(meta, timestamp, "timestamp", versioned=False)
    return targets.signed.version, snapshot.signed.version, timestamp.signed.version


def publish(folder: Path, bundle: Path, target_name: str, *, keys: Path | None = None) -> TargetFile:
    """Add ``bundle`` as target ``target_name`` (e.g. ``models/ssd-1.2.0.tar``) and re-sign the chain.

    The targets key comes from ``folder/keys`` or the offline folder ``keys`` (see :func:`load_signer`).
    """
    import shutil

    info = TargetFile.from_file(target_name, str(bundle), ["sha256"])
    digest = info.hashes["sha256"]
    # Consistent snapshots: targets are stored under their hash, so a file never changes under a name.
    stored = folder / "targets" / Path(target_name).parent / f"{digest}.{Path(target_name).name}"
    stored.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundle, stored)
    targets = _load(folder / "metadata", "targets")
    targets.signed.targets[target_name] = info
    _resign_chain(folder, targets, keys)
    return info


def revoke(folder: Path, target_name: str, *, keys: Path | None = None) -> bool:
    """Withdraw a target: devices stop seeing it at their next refresh. False when it was not published."""
    targets = _load(folder / "metadata", "targets")
    if targets.signed.targets.pop(target_name, None) is None:
        return False
    _resign_chain(folder, targets, keys)
    return True


def list_targets(folder: Path) -> dict[str, dict[str, Any]]:
    """Published targets: name → length, sha256, custom fields."""
    targets = _load(folder / "metadata", "targets")
    return {name: {"length": t.length, "sha256": t.hashes.get("sha256"), "custom": t.custom}
            for name, t in targets.signed.targets.items()}  # fmt: skip


def refresh_timestamp(folder: Path) -> int:
    """Re-sign snapshot and timestamp with a fresh expiry (daily, from a timer: defeats freeze attacks)."""
    return _resign_chain(folder)[2]


def rotate_key(folder: Path, role: str, *, keys: Path | None = None) -> int:
    """Replace ``role``'s key: a new root version names the new key, signed by the current root key
    (and by the new one when the root key itself rotates), then the role's metadata is re-signed.

    Devices follow the chain of roots by themselves (ngclient); the old key, kept as
    ``<role>.pem.retired-<root version>`` beside it, is trusted no more. A key kept offline (in
    ``keys``) is replaced there: the new root or targets key never touches the hub's disk. Returns
    the new root version.

    Raises:
        ValueError: an unknown role.
    """
    if role not in ROLES:
        raise ValueError(f"role {role!r}: one of {', '.join(ROLES)}")
    meta = folder / "metadata"
    root = _load(meta, "root")
    old_root = load_signer(folder, "root", keys)
    new = CryptoSigner.generate_ed25519()
    for keyid in list(root.signed.roles[role].keyids):
        root.signed.revoke_key(keyid, role)
    root.signed.add_key(new.public_key, role)
    root.signed.version += 1
    root.signed.expires = _expiry("root")
    root.signatures.clear()
    root.sign(old_root, append=True)  # devices trust the new root through the old root key
    if role == "root":
        root.sign(new, append=True)  # and the new root must be signed by its own key too
    key_file = _key_path(folder, role, keys)
    key_file.rename(key_file.with_name(f"{role}.pem.retired-{root.signed.version - 1}"))
    write_private(key_file, new.private_bytes)
    _write(meta, root, "root", versioned=True)
    if role == "targets":
        _resign_chain(folder, _load(meta, "targets"), keys)
    elif role in ("snapshot", "timestamp"):
        _resign_chain(folder)
    return int(root.signed.version)
