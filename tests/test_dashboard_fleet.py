"""The fleet panel reads the fields the API serves (issue 20: it read `d.online` and `hb.temperature_c`).

The JavaScript is parsed for every field it reads from a device (``device.<field>``) and from its
heartbeat (``hb.<field>``) in ``loadFleet``; each must be a property of ``DevicePublic`` or
``HeartbeatPublic`` in the hub's OpenAPI description. The same check is shown failing on the
fields the panel used to read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hub.api.main import create_app
from hub.config import HubSettings
from tests.conftest import ROOT

APP_JS = ROOT / "hub" / "dashboard" / "app.js"


def fleet_function(source: str) -> str:
    """The body of ``loadFleet`` (up to the next top-level function)."""
    start = source.index("async function loadFleet()")
    end = source.index("\n}\n", start)
    return source[start:end]


def fields_read(code: str) -> dict[str, set[str]]:
    """Fields read off ``device`` and ``hb`` (method calls such as ``device.toString()`` excluded)."""
    found: dict[str, set[str]] = {"device": set(), "hb": set()}
    for obj, field in re.findall(r"\b(device|hb)\??\.([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\()", code):
        found[obj].add(field)
    return found


def unknown_fields(code: str, spec: dict[str, Any]) -> dict[str, set[str]]:
    schemas = spec["components"]["schemas"]
    allowed = {
        "device": set(schemas["DevicePublic"]["properties"]),
        "hb": set(schemas["HeartbeatPublic"]["properties"]),
    }
    read = fields_read(code)
    return {obj: read[obj] - allowed[obj] for obj in read if read[obj] - allowed[obj]}


def _spec(tmp_path: Path) -> dict[str, Any]:
    return create_app(HubSettings(db=str(tmp_path / "h.sqlite"), ingest=False)).openapi()


def test_fleet_panel_reads_only_fields_of_the_api_schema(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    code = fleet_function(APP_JS.read_text())
    read = fields_read(code)
    # What the panel promises to show: status, last-seen age, temperature, outbox depth and drops.
    assert {"status", "seconds_since_seen", "heartbeat", "site", "device"} <= read["device"]
    assert {"cpu_temp_c", "outbox_depth", "outbox_dropped", "fps", "model"} <= read["hb"]
    assert unknown_fields(code, spec) == {}


def test_the_check_catches_the_fields_the_panel_used_to_read(tmp_path: Path) -> None:
    """The issue's bug, planted: the same check names both wrong fields."""
    old = "const online = device.online ? 'online' : 'offline'; const t = hb.temperature_c ?? '-';"
    assert unknown_fields(old, _spec(tmp_path)) == {"device": {"online"}, "hb": {"temperature_c"}}
