"""The agent's MQTT link against a real Mosquitto: each outbox row goes out once until it is due again."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion

from edge.link import MqttLink
from edge.outbox import Outbox
from vigie.broker import LocalBroker
from vigie.mqtt import BrokerConfig
from vigie.netutil import free_port

pytestmark = pytest.mark.e2e


class _SlowToMarkSent(Outbox):
    """An outbox on a slow SD card: recording a PUBACK takes a while."""

    def mark_sent(self, rowids: Iterable[int], at: float) -> None:
        time.sleep(0.05)
        super().mark_sent(rowids, at)


def test_a_row_is_not_sent_again_while_its_ack_is_being_recorded(broker: LocalBroker, tmp_path: Path) -> None:
    deliveries: Counter[bytes] = Counter()
    subscribed = threading.Event()
    tap = Client(CallbackAPIVersion.VERSION2, client_id="link-tap")
    tap.on_subscribe = lambda *a: subscribed.set()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        deliveries[bytes(message.payload)] += 1

    tap.on_message = on_message
    tap.connect("127.0.0.1", broker.port)
    tap.subscribe("vigie/v1/test/cam-1/event", qos=1)
    tap.loop_start()
    assert subscribed.wait(5)
    outbox = _SlowToMarkSent(tmp_path / "o.sqlite")
    # No hub, so no receipt: within the resend wait, nothing may go out twice.
    link = MqttLink(BrokerConfig(port=broker.port), outbox, site="test", device="cam-1", resend_after_s=600)
    link.start()
    try:
        for i in range(40):
            outbox.put("vigie/v1/test/cam-1/event", f"event-{i}".encode(), 1, f"id-{i}")
            link.notify()  # the agent wakes the pump at every write, as here
            time.sleep(0.02)
        deadline = time.monotonic() + 10
        while outbox.awaiting_receipt() < 40 and time.monotonic() < deadline:
            link.notify()
            time.sleep(0.01)
        time.sleep(0.5)
    finally:
        link.stop()
        tap.loop_stop()
        tap.disconnect()
    assert outbox.awaiting_receipt() == 40
    assert sorted(deliveries) == sorted(f"event-{i}".encode() for i in range(40))
    assert [p for p, n in deliveries.items() if n > 1] == []


def test_the_link_moves_to_a_failover_node_when_its_broker_is_gone(
    broker: LocalBroker, tmp_path: Path
) -> None:
    dead = free_port()  # nothing listens there: the device's home node is down
    config = BrokerConfig(port=dead, failover=(f"127.0.0.1:{broker.port}",))
    link = MqttLink(config, Outbox(tmp_path / "outbox.db"), site="s", device="d")
    link.start()
    try:
        deadline = time.monotonic() + 15
        while not link.connected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert link.connected, f"still not connected, on {link.address}"
        assert link.address == ("127.0.0.1", broker.port)
    finally:
        link.stop()
    link2 = MqttLink(config, Outbox(tmp_path / "outbox2.db"), site="s", device="d2")
    assert link2.address == ("127.0.0.1", dead)  # a new link's first attempt goes to `host`
