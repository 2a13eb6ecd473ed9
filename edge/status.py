"""The agent's status file, beside its outbox, for ``vigie edge status`` on site.

The agent rewrites it atomically (write then rename) at every heartbeat period, whether or
not the broker is reachable, and whenever a trouble starts or ends (:mod:`edge.troubles`):
a technician with a shell on the box reads what the agent is doing without a network.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from vigie.exceptions import VigieError
from vigie.files import write_atomic

__all__ = ["format_status", "read_status", "status_path", "write_status"]


def status_path(outbox: Path) -> Path:
    """``vigie-outbox.sqlite`` → ``vigie-outbox.status.json``, in the same folder."""
    return outbox.with_suffix(".status.json")


def write_status(path: Path, body: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(body, indent=1, sort_keys=True).encode())


def read_status(path: Path) -> dict[str, Any]:
    """The status the agent last wrote; a VigieError that says what to check when there is none."""
    try:
        body: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise VigieError(
            f"no agent status at {path}: the agent has not started with this outbox "
            "(give its --outbox, or --config and --device)"
        ) from None
    except (OSError, ValueError) as exc:
        raise VigieError(f"cannot read the agent status {path}: {exc}") from None
    return body


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def format_status(body: dict[str, Any], now: float | None = None, *, stale_s: float = 120.0) -> str:
    """The status in a few lines for a technician (pure)."""
    now = time.time() if now is None else now
    age = now - float(body.get("updated_at", 0))
    state = body.get("state", "running")
    if state == "running" and age > stale_s:
        state = f"not running? (status not updated for {_ago(age).removesuffix(' ago')})"
    lines = [
        f"agent {body.get('site')}/{body.get('device')} (version {body.get('agent_version')}, pid "
        f"{body.get('pid')}): {state}, updated {_ago(age)}",
        f"broker {body.get('broker')}: {'connected' if body.get('connected') else 'NOT connected'}",
        f"outbox: {body.get('outbox_depth')} waiting, {body.get('outbox_dropped')} dropped; "
        f"frames analysed: {body.get('frames')}",
    ]
    troubles = body.get("troubles") or {}
    if not troubles:
        lines.append("troubles: none")
    for kind, t in sorted(troubles.items()):
        retry = t.get("next_retry_at")
        when = f"; next try in {max(0.0, retry - now):.0f} s" if retry else ""
        lines.append(f"{kind}: {t['cause']} (since {_ago(now - t['since'])}, {t['attempts']} attempts{when})")
    return "\n".join(lines)
