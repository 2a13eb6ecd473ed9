"""Two hub hosts on one PostgreSQL share one campaign: separate `vigie ota campaign` processes
create it, run it, see it and pause it, and the runner honours the pause from the other process."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import PG_DSN, cli, need_service, postgres_available
from vigie import wire
from vigie.exceptions import WireError
from vigie.mqtt import BrokerConfig, make_client

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

DEVICES = [f"shared/dev-{i}" for i in range(10)]


class Fleet:
    """Fake devices on the broker: they record each OTA command, and answer `installed` once released."""

    def __init__(self, port: int) -> None:
        self.commands: list[tuple[str, str]] = []  # (site/device, action), in arrival order
        self._held: list[wire.OtaCommand] = []
        self._answer = False
        self._lock = threading.Lock()
        self.client = make_client(BrokerConfig(port=port), f"fleet-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, u, f, r, p=None: c.subscribe(
            wire.subscription(wire.Channel.OTA), qos=1
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            command = wire.decode(message.payload, wire.Channel.OTA)
        except WireError:
            return
        if not isinstance(command, wire.OtaCommand):
            return
        with self._lock:
            self.commands.append((f"{command.site}/{command.device}", command.action))
            if not self._answer:
                self._held.append(command)
                return
        self._installed(command)

    def _installed(self, command: wire.OtaCommand) -> None:
        state = wire.OtaState(site=command.site, device=command.device, ts=int(time.time()),
                              campaign=command.campaign, step="installed", model="m@1.1.0",
                              latency_ms=20.0)  # fmt: skip
        topic = wire.topic(command.site, command.device, wire.Channel.OTA_STATE)
        self.client.publish(topic, wire.encode(state), qos=1)

    def release(self) -> None:
        """Answer what was held, and every command from now on."""
        with self._lock:
            self._answer, held, self._held = True, self._held, []
        for command in held:
            self._installed(command)

    def wait_for(self, n: int, timeout: float = 30.0) -> list[tuple[str, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.commands) < n:
            time.sleep(0.1)
        return list(self.commands)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A postgresql:// URL whose search_path is a fresh schema (dropped afterwards), as a hub's --db."""
    need_service(postgres_available(), f"PostgreSQL ({PG_DSN})")
    from psycopg.conninfo import conninfo_to_dict

    from hub.storage.postgres import PostgresStore

    schema = f"t_{uuid.uuid4().hex[:12]}"
    owner = PostgresStore(PG_DSN, schema=schema)  # creates the schema and its tables
    info = conninfo_to_dict(PG_DSN)
    user = f"{info['user']}@" if info.get("user") else ""
    host, port, name = info.get("host", "127.0.0.1"), info.get("port", "5432"), info.get("dbname", "test")
    try:
        yield f"postgresql://{user}{host}:{port}/{name}?options={quote(f'-csearch_path={schema}')}"
    finally:
        owner.drop_schema()
        owner.close()


def _campaign(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    """One operator command, in a process of its own (another hub host, for all it knows)."""
    run = subprocess.run(cli("ota", "campaign", *args, "--db", db), capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def test_two_hub_processes_on_one_postgresql_share_one_campaign(broker: Any, pg_url: str) -> None:
    import json

    created = _campaign(pg_url, "create", "--name", "c-shared", "--target", "models/m-1.1.0.tar",
                        "--version", "1.1.0", "--devices", ",".join(DEVICES), "--waves", "0.1,0.5,1",
                        "--wave-timeout", "60")  # fmt: skip
    assert "campaign c-shared: 10 devices in waves of [1, 4, 5]" in created.stdout
    assert "c-shared" in _campaign(pg_url, "list").stdout  # another process sees it
    fleet = Fleet(broker.port)
    runner = subprocess.Popen(
        cli("ota", "campaign", "run", "c-shared", "--db", pg_url, "--broker", f"127.0.0.1:{broker.port}"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        canary = fleet.wait_for(1)
        assert len(canary) == 1, canary  # wave 1: the canary only
        assert canary[0][1] == "install"
        assert _campaign(pg_url, "pause", "c-shared").stdout.strip() == "c-shared: paused"
        fleet.release()  # the canary installs while the campaign is paused
        deadline = time.monotonic() + 20
        shown = json.loads(_campaign(pg_url, "show", "c-shared").stdout)
        while time.monotonic() < deadline and shown["installed"] < 1:
            time.sleep(0.5)
            shown = json.loads(_campaign(pg_url, "show", "c-shared").stdout)
        # The runner wrote the canary's outcome without undoing the other process's pause ...
        assert (shown["state"], shown["wave"], shown["installed"]) == ("paused", 1, 1)
        time.sleep(3)  # ... and starts no wave while paused (it ticks every 0.5 s)
        assert fleet.commands == canary
        assert runner.poll() is None
        assert _campaign(pg_url, "resume", "c-shared").stdout.strip() == "c-shared: running"
        out, err = runner.communicate(timeout=90)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        fleet.stop()
    assert runner.returncode == 0, out + err
    assert "c-shared: done, 10/10 installed, 0 failed" in out
    assert sorted(d for d, _ in fleet.commands) == sorted(DEVICES)  # every device asked once, no wave twice
    events = [e["event"] for e in json.loads(_campaign(pg_url, "show", "c-shared").stdout)["log"]]
    assert events == ["wave 1 started", "paused", "running", "wave 1 pass", "wave 2 started", "wave 2 pass",
                      "wave 3 started", "wave 3 pass"]  # fmt: skip
