"""Issue 17, finding 1 at the wire: a heartbeat's or OTA state's model is a model reference, not free text."""

from __future__ import annotations

import msgpack
import pytest

from vigie import wire

BEAT = {
    "kind": "heartbeat", "v": wire.SCHEMA_VERSION, "site": "s", "device": "d", "ts": 1_700_000_000,
    "agent_version": "0.1.0", "uptime_s": 5, "fps": 4.5, "inference_p50_ms": 17.0, "inference_p95_ms": 19.5,
    "cpu_percent": 42.0, "rss_mb": 180.2, "disk_free_mb": 5000.0, "outbox_depth": 0, "outbox_dropped": 0,
}  # fmt: skip
STATE = {"kind": "ota_state", "v": wire.SCHEMA_VERSION, "site": "s", "device": "d", "ts": 1_700_000_000,
         "campaign": "c-1", "step": "installed"}  # fmt: skip
HOSTILE = ["<img src=x onerror=alert(1)>", "m@1<script>", "m@1 onload=x", "M@1", "@1", "m@", "m@1\n"]
LONGEST = "a" * 48 + "@" + "1" * 24
WELL_FORMED = ["m@1", "ssd-mobilenet-v2-coco-quant@1.0.0", "yolo_v8n.int8@2024.3+build-7", LONGEST]


def _decode(body: dict[str, object], channel: wire.Channel) -> wire.Message:
    return wire.decode(bytes(msgpack.packb(body)), channel)


@pytest.mark.parametrize("model", WELL_FORMED)
def test_well_formed_model_references_still_pass(model: str) -> None:
    """Backward compatible: every reference an agent has ever sent (``<id>@<version>``) decodes."""
    beat = _decode({**BEAT, "model": model}, wire.Channel.HEARTBEAT)
    assert isinstance(beat, wire.Heartbeat)
    assert beat.model == model
    state = _decode({**STATE, "model": model}, wire.Channel.OTA_STATE)
    assert isinstance(state, wire.OtaState)
    assert state.model == model


@pytest.mark.parametrize("model", HOSTILE)
def test_markup_in_a_model_reference_is_refused_at_the_wire(model: str) -> None:
    for body, channel in ((BEAT, wire.Channel.HEARTBEAT), (STATE, wire.Channel.OTA_STATE)):
        with pytest.raises(wire.WireError) as caught:
            _decode({**body, "model": model}, channel)
        assert "model" in str(caught.value)
