"""Wire version 2: zone counts carry their spread (sd_counts); the hub still takes version 1."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from edge.anonymise import AnonymisationConfig, Anonymiser
from hub.ingest import classify
from hub.storage import EventQuery
from tests.test_wire import WINDOW, event, raw_event
from vigie import wire
from vigie.exceptions import WireError

T = "vigie/v1/vieux-port/cam-01/event"


def _v1_payload() -> bytes:
    """A zone count exactly as a version-1 agent packs it: no sd_counts field at all."""
    body = msgpack.unpackb(wire.encode(event()))
    del body["sd_counts"]
    body["v"] = 1
    return bytes(msgpack.packb(body))


def test_the_agent_publishes_occupancy_and_its_spread() -> None:
    anon = Anonymiser(
        site="s", device="d", zones=["all"], lines=[], classes=["person"], model_ref="m@1",
        config=AnonymisationConfig(window_s=10, k=1),
    )  # fmt: skip
    for i, n in enumerate([2, 4, 2, 4, 0, 6]):
        anon.add(WINDOW + i, {"all": {"person": n} if n else {}})
    (e,) = anon.flush()
    assert isinstance(e, wire.ZoneCountEvent)
    assert e.v == 2
    assert e.counts == {"person": 6}  # the peak, named as such
    assert e.mean_counts == {"person": 3.0}
    assert e.sd_counts == {"person": pytest.approx(1.91, abs=0.01)}  # sqrt(22 / 6)
    assert wire.decode(wire.encode(e), wire.Channel.EVENT) == e


def test_version_1_without_spread_is_accepted() -> None:
    decoded = wire.decode(_v1_payload(), wire.Channel.EVENT)
    assert isinstance(decoded, wire.ZoneCountEvent)
    assert decoded.v == 1
    assert decoded.sd_counts == {}


@pytest.mark.parametrize(
    ("payload", "field", "reason"),
    [
        (raw_event(v=1, sd_counts={"person": 1.0}), "sd_counts", "not in the v1 schema"),
        (raw_event(sd_counts={"car": 1.0}), "sd_counts", "mean_counts does not publish"),
        (raw_event(sd_counts={"person": -1.0}), "sd_counts.person", "greater than or equal to 0"),
        (raw_event(v=3), "v", "this hub speaks 1 and 2"),
    ],
)
def test_spread_errors_are_named(payload: bytes, field: str, reason: str) -> None:
    with pytest.raises(WireError) as info:
        wire.decode(payload, wire.Channel.EVENT)
    assert info.value.field == field
    assert reason in info.value.reason


def test_the_hub_ingests_and_stores_both_versions(store: Any) -> None:
    v1 = classify(T, _v1_payload(), 1.0)
    v2 = classify(T, wire.encode(event(zone="rue", sd_counts={"person": 0.5})), 1.0)
    assert isinstance(v1, wire.ZoneCountEvent)
    assert isinstance(v2, wire.ZoneCountEvent)
    assert store.add_events([v1, v2], 1.0) == 2
    rows, _ = store.list_events(EventQuery())
    by_zone = {r["zone"]: r for r in rows}
    assert by_zone["quai"]["v"] == 1
    assert by_zone["rue"]["v"] == 2
    assert by_zone["rue"]["sd_counts"] == {"person": 0.5}
    assert by_zone["quai"]["mean_counts"] == {"person": 2.5, "bus": 0.2}
