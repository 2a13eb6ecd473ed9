"""Where the device's OTA files live: the one place that knows the folder's layout.

Layout (``/var/lib/vigie/ota`` by default)::

    metadata/root.json   the trusted TUF root (from enrolment); ngclient keeps the rest here
    cache/               downloaded bundles (verified by ngclient: length and sha256 from signed metadata)
    cache/partial/       resumable partial downloads
    slots/a, slots/b     two unpacked bundles; one is live
    current -> slots/a   the live slot: a symlink replaced atomically (rename)
    state.json           the step in progress, written atomically before each step
    lock                 the pid of whoever last changed slots (the folder itself is flock'ed meanwhile)

The agent only reads (:meth:`SlotLayout.live_slot`, :meth:`SlotLayout.live_manifest`);
:mod:`edge.ota.updater` is the only writer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ota.bundle import BundleManifest

__all__ = ["SLOT_NAMES", "SlotLayout"]

SLOT_NAMES = ("a", "b")
_MANIFEST = "manifest.json"


@dataclass(frozen=True, slots=True)
class SlotLayout:
    """The paths inside one device's OTA folder, and what the live slot holds."""

    root: Path

    @property
    def metadata(self) -> Path:
        return self.root / "metadata"

    @property
    def trusted_root(self) -> Path:
        return self.metadata / "root.json"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def partial(self) -> Path:
        return self.cache / "partial"

    @property
    def current(self) -> Path:
        return self.root / "current"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    def slot(self, name: str) -> Path:
        """Slot ``name`` (``a`` or ``b``; a state file written by an older version may name others)."""
        return self.root / "slots" / name

    def folders(self) -> list[Path]:
        """The folders an updater needs before its first step."""
        return [self.metadata, self.cache, *(self.slot(n) for n in SLOT_NAMES)]

    def current_slot(self) -> Path | None:
        """Where ``current`` points (even a slot since emptied), or None before the first install."""
        link = self.current
        return (self.root / os.readlink(link)).resolve() if link.is_symlink() else None

    def other_slot(self) -> Path:
        """The slot an update may write: never the live one."""
        current = self.current_slot()
        return self.slot("b" if current is not None and current.name == "a" else "a")

    def live_slot(self) -> Path | None:
        """The live slot's real path when it exists (what the agent loads), else None."""
        slot = self.current_slot()
        return slot if slot is not None and slot.exists() else None

    @staticmethod
    def manifest_in(slot: Path) -> BundleManifest | None:
        """The bundle manifest unpacked in ``slot``, or None when the slot holds no bundle."""
        path = slot / _MANIFEST
        if not path.is_file():
            return None
        return BundleManifest.model_validate_json(path.read_text())

    def live_manifest(self) -> BundleManifest | None:
        """The live slot's bundle manifest, or None (no OTA model installed)."""
        slot = self.current_slot()
        return None if slot is None else self.manifest_in(slot)
