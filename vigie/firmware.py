"""Where the hardware profiles and site configurations live, in a checkout and in an installed wheel."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["known_profiles", "profiles_dir"]

_HERE = Path(__file__).resolve().parent


def profiles_dir() -> Path:
    """``$VIGIE_PROFILES_DIR``, else ``firmware_configs/profiles`` of a checkout, else the wheel's copy."""
    if env := os.environ.get("VIGIE_PROFILES_DIR"):
        return Path(env)
    checkout = _HERE.parent / "firmware_configs" / "profiles"
    return checkout if checkout.is_dir() else _HERE / "_firmware_configs" / "profiles"


def known_profiles() -> list[str]:
    """Names of the hardware profiles shipped (``rpi4``, ``rpi5``, ...)."""
    return sorted(p.stem for p in profiles_dir().glob("*.yaml"))
