"""Issue 17, finding 2, for the demo: its broker binds the client id to the username, as production does.

Real Mosquitto from the configuration `vigie demo` writes (vigie/broker.py, vigie/demo.py), with the
demo's generated passwords: camera 2 connects under camera 1's client id, then under the hub
ingest's; neither is disconnected. Before, the broker kicked the original off each time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.conftest import need_service
from vigie.broker import LocalBroker, find_mosquitto, start_broker
from vigie.demo import HUB_USER, BrokerAuth, broker_auth
from vigie.netutil import free_port

pytestmark = pytest.mark.e2e
HUB_ID = "vigie-hub-ingest"  # the ingest's client id (hub/config.py)


@pytest.fixture
def demo_broker(tmp_path: Path) -> Iterator[tuple[LocalBroker, BrokerAuth]]:
    need_service(find_mosquitto() is not None, "mosquitto")
    auth = broker_auth(tmp_path, agents=2)
    broker = start_broker(
        tmp_path / "broker", free_port(), password_file=auth.password_file, acl_file=auth.acl_file
    )
    try:
        yield broker, auth
    finally:
        broker.stop()


def _connect(port: int, auth: BrokerAuth, user: str, client_id: str, gone: dict[str, int], name: str) -> Any:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    result: dict[str, Any] = {}
    client.on_connect = lambda c, u, f, reason, p: result.setdefault("reason", reason)

    def on_disconnect(c: Any, u: Any, f: Any, reason: Any, p: Any) -> None:
        gone[name] = gone.get(name, 0) + 1

    client.on_disconnect = on_disconnect
    client.username_pw_set(user, auth.password_files[user].read_text())
    client.connect("127.0.0.1", port)
    client.loop_start()
    deadline = time.monotonic() + 5
    while "reason" not in result and time.monotonic() < deadline:
        time.sleep(0.05)
    assert result.get("reason") == 0, (name, result)
    return client


def test_a_demo_camera_cannot_take_over_another_client_id(
    demo_broker: tuple[LocalBroker, BrokerAuth],
) -> None:
    broker, auth = demo_broker
    gone: dict[str, int] = {}
    clients = [
        _connect(broker.port, auth, HUB_USER, HUB_ID, gone, "hub"),
        _connect(broker.port, auth, "demo/cam-1", "demo/cam-1", gone, "cam-1"),
    ]
    try:
        for stolen in ("demo/cam-1", HUB_ID):
            clients.append(_connect(broker.port, auth, "demo/cam-2", stolen, gone, f"cam-2 as {stolen}"))
            time.sleep(1.0)
        assert gone.get("hub", 0) == 0, gone
        assert gone.get("cam-1", 0) == 0, gone
        assert clients[0].is_connected()
        assert clients[1].is_connected()
    finally:
        for c in clients:
            c.loop_stop()
            c.disconnect()


def test_the_demo_broker_config_binds_the_client_id(demo_broker: tuple[LocalBroker, BrokerAuth]) -> None:
    conf = (broker_dir := demo_broker[0].log_path.parent) / "mosquitto.conf"
    text = conf.read_text()
    assert "use_username_as_clientid true" in text, broker_dir
    assert "allow_anonymous false" in text
