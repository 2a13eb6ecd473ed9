"""Which devices a campaign updates: enrolled, unrevoked devices matching a selector. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Selector", "select_devices"]

_KEY = r"^[a-z0-9][a-z0-9-]{0,47}/[a-z0-9][a-z0-9-]{0,47}$"


class Selector(BaseModel):
    """Every field given must match (AND); within a list, any value (OR). Empty: the whole fleet."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    devices: list[str] | None = Field(
        default=None, max_length=100_000, description="Explicit `site/device` list (still must be enrolled)."
    )
    sites: list[str] | None = Field(default=None, max_length=1000, description="Sites, e.g. `vieux-port`.")
    profiles: list[str] | None = Field(
        default=None, max_length=100, description="Hardware profiles (`rpi5`)."
    )
    models: list[str] | None = Field(
        default=None,
        max_length=100,
        description="Models running now (last heartbeat): `ssd-coco` (any version) or `ssd-coco@1.0.0`.",
    )
    tags: list[str] | None = Field(
        default=None, max_length=100, description="Operators' tags (`PUT /v1/devices/{site}/{device}/tags`)."
    )


def _model_matches(running: str | None, wanted: Iterable[str]) -> bool:
    if running is None:
        return False
    name = running.split("@", 1)[0]
    return any(w in (running, name) for w in wanted)


def select_devices(
    enrolments: Iterable[Mapping[str, Any]],
    seen: Iterable[Mapping[str, Any]],
    selector: Selector,
    tags: Mapping[str, Sequence[str]] | None = None,
) -> list[str]:
    """``site/device`` of the enrolled, unrevoked devices the selector matches, sorted.

    ``enrolments``: the registry (``site``, ``device``, ``profile``, ``revoked_at``); ``seen``: the
    devices the hub heard from (``site``, ``device``, ``heartbeat`` with its ``model``); ``tags``:
    ``site/device`` → the operators' tags.
    """
    tags = tags or {}
    models = {f"{d['site']}/{d['device']}": (d.get("heartbeat") or {}).get("model") for d in seen}
    explicit = set(selector.devices) if selector.devices is not None else None
    chosen = []
    for e in enrolments:
        key = f"{e['site']}/{e['device']}"
        if e.get("revoked_at") is not None:
            continue
        if explicit is not None and key not in explicit:
            continue
        if selector.sites is not None and e["site"] not in selector.sites:
            continue
        if selector.profiles is not None and e["profile"] not in selector.profiles:
            continue
        if selector.models is not None and not _model_matches(models.get(key), selector.models):
            continue
        if selector.tags is not None and not set(selector.tags) & set(tags.get(key, ())):
            continue
        chosen.append(key)
    return sorted(chosen)
