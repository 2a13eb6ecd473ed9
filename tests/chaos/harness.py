"""Real processes for the fault-injection suite, and the exact accounting it is judged on.

A bench is one private Mosquitto, the hub (`vigie hub serve`, SQLite store)
and agents (`vigie edge run`: the real TFLite model on real footage, the real
outbox and MQTT link), each a process the scenario can kill, pause, restart,
cut off or give a wrong clock. The ledger then reads what each agent's outbox
says it produced and what the hub's store holds, per device.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from edge.outbox import Outbox
from vigie.broker import LocalBroker, start_broker
from vigie.netutil import free_port, wait_for_port

SITE = "chaos"
#: Ten vertical strips: one zone-count event per zone per 10 s window, about one event a second.
ZONES = [f"z{i}={i / 10:.1f},0;{(i + 1) / 10:.1f},0;{(i + 1) / 10:.1f},1;{i / 10:.1f},1" for i in range(10)]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vigie", *args]


def make_clip(source: Path, out: Path, seconds: float) -> Path:
    """The first ``seconds`` of a video, so that an agent's run has a known, short length."""
    cap = cv2.VideoCapture(str(source))
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    ok, frame = cap.read()
    assert ok, f"cannot read {source}"
    h, w = frame.shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h))
    for _ in range(int(fps * seconds)):
        writer.write(frame)
        ok, frame = cap.read()
        if not ok:
            break
    writer.release()
    cap.release()
    return out


@dataclass
class Proc:
    """A child process with its log, that a scenario may signal."""

    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log.open("ab") as fh:
            self.process = subprocess.Popen(
                self.argv, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **self.env},
                start_new_session=True,
            )  # fmt: skip
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            # The whole group: `ip netns exec` and faketime wrap the real process.
            os.killpg(self.pid, sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> None:
        if not self.alive():
            return
        self.signal(signal.SIGTERM)
        assert self.process is not None
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Agent:
    device: str
    outbox: Path
    proc: Proc


@dataclass
class Count:
    """One device's accounting. ``lost`` is what nothing accounts for; it must be 0."""

    device: str
    produced: int  # committed to the outbox (its AUTOINCREMENT counter)
    dropped: int  # dropped by the outbox's quota or disk reserve, counted and reported
    pending: int  # still in the outbox
    stored: int  # distinct event ids in the hub's store
    delivered: int  # deliveries the hub counted for the device, duplicates included
    duplicate_ids: int  # rows beyond one per id (the primary key makes this 0 by construction)
    duplicate_windows: int  # a zone's window stored under two ids: a re-emitted window
    resent: int  # events the agent published again because no receipt came (from its log)

    @property
    def lost(self) -> int:
        return self.produced - self.dropped - self.pending - self.stored

    @property
    def recovered(self) -> int:
        """At least this many resent events had never reached the hub: lost without the receipts.

        Every duplicate delivery is counted as if it came from a resend (some are the
        broker's own redeliveries), so this is a lower bound.
        """
        return max(0, self.resent - (self.delivered - self.stored))


class Bench:
    """Broker, hub and agents for one scenario, all under ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        model_dir: Path,
        clip: Path,
        *,
        broker_host: str = "127.0.0.1",
        max_queued_messages: int = 100_000,
        store_url: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.model_dir = model_dir
        self.clip = clip
        self.broker_host = broker_host
        self.broker_port = free_port()
        self.max_queued_messages = max_queued_messages
        self.db = workdir / "hub.sqlite"
        #: The hub's store: this SQLite file, or a PostgreSQL URL (its search_path names a schema).
        self.store_url = store_url or str(self.db)
        self.hub_port = free_port()
        self.broker: LocalBroker | None = None
        self.hub: Proc | None = None
        self.agents: dict[str, Agent] = {}
        self.timeline: list[tuple[float, str]] = []
        self.t0 = time.monotonic()

    def mark(self, what: str) -> None:
        self.timeline.append((round(time.monotonic() - self.t0, 1), what))

    # -- broker ---------------------------------------------------------------------------
    def start_broker(self) -> None:
        self.broker = start_broker(
            self.workdir / "broker", self.broker_port, host=self.broker_host,
            max_queued_messages=self.max_queued_messages,
        )  # fmt: skip
        self.mark("broker up")

    def kill9_broker(self) -> None:
        assert self.broker is not None
        self.broker.process.send_signal(signal.SIGKILL)
        self.broker.process.wait(timeout=10)
        self.mark("broker killed (SIGKILL)")

    # -- hub ------------------------------------------------------------------------------
    def start_hub(self) -> None:
        self.hub = Proc(
            cli("hub", "serve", "--port", str(self.hub_port), "--db", self.store_url,
                "--broker", f"{self.broker_host}:{self.broker_port}"),
            self.workdir / "hub.log", env={"VIGIE_HUB_AUTH": "off"},
        ).start()  # fmt: skip
        assert wait_for_port(self.hub_port, timeout=30), self.hub.text()
        self.mark("hub up")

    def kill9_hub(self) -> None:
        assert self.hub is not None
        self.hub.kill9()
        self.mark("hub killed (SIGKILL)")

    # -- agents ---------------------------------------------------------------------------
    def agent_argv(
        self, device: str, *, broker_host: str | None = None, source: Path | None = None
    ) -> list[str]:
        zones = [a for z in ZONES for a in ("--zone", z)]
        return cli(
            "edge", "run", "--site", SITE, "--device", device, "--source", str(source or self.clip),
            "--realtime", "--fps-cap", "2", "--threads", "1", "--window", "10", "--k", "3", *zones,
            "--model-dir", str(self.model_dir),
            "--broker", f"{broker_host or self.broker_host}:{self.broker_port}",
            "--outbox", str(self.workdir / f"{device}.outbox"), "--drain-timeout", "400",
        )  # fmt: skip

    def start_agent(
        self,
        device: str,
        *,
        prefix: Sequence[str] = (),
        broker_host: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Agent:
        argv = [*prefix, *self.agent_argv(device, broker_host=broker_host)]
        proc = Proc(argv, self.workdir / f"{device}.log", env=env or {}).start()
        agent = Agent(device, self.workdir / f"{device}.outbox", proc)
        self.agents[device] = agent
        self.mark(f"agent {device} started")
        return agent

    def wait_agents(self, timeout: float) -> dict[str, int]:
        """Wait for every agent to finish its clip and drain its outbox; their exit codes."""
        deadline = time.monotonic() + timeout
        codes: dict[str, int] = {}
        for device, agent in self.agents.items():
            left = max(1.0, deadline - time.monotonic())
            try:
                codes[device] = agent.proc.wait(left)
            except subprocess.TimeoutExpired:
                codes[device] = -999
        self.mark("agents done")
        return codes

    # -- accounting -----------------------------------------------------------------------
    @property
    def store_target(self) -> str:
        """What ``open_store`` opens: the PostgreSQL URL, or the SQLite file."""
        return self.store_url if self.store_url.startswith("postgresql://") else str(self.db)

    def query(self, sql: str, *args: object) -> tuple[Any, ...] | None:
        """One row from the hub's store (``?`` placeholders), SQLite or PostgreSQL."""
        if self.store_url.startswith("postgresql://"):
            import psycopg

            with psycopg.connect(self.store_url, connect_timeout=10) as pg:
                row = pg.execute(sql.replace("?", "%s"), args).fetchone()
                return tuple(row) if row is not None else None
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)) as db:
            found = db.execute(sql, args).fetchone()
            return tuple(found) if found is not None else None

    def ledger(self) -> dict[str, Count]:
        out: dict[str, Count] = {}
        for device, agent in self.agents.items():
            box = Outbox(agent.outbox, disk_reserve_bytes=0)
            copies = stored_ids(self.store_target, site=SITE, device=device)
            rows, ids = len(copies), len(set(copies))
            events = stored_events(self.store_target, site=SITE, device=device)
            places = [(e.get("zone") or e.get("line") or e.get("sensor"), e.get("window_start", e.get("ts")))
                      for e in events]  # fmt: skip
            windows = len(set(places))
            row = self.query("SELECT events FROM devices WHERE site = ? AND device = ?", SITE, device)
            out[device] = Count(
                device=device, produced=box.produced(), dropped=box.dropped(), pending=box.depth(),
                stored=ids, delivered=row[0] if row else 0, duplicate_ids=rows - ids,
                duplicate_windows=ids - windows,
                resent=sum(map(int, re.findall(r"sending again\s+messages=(\d+)", agent.proc.text()))),
            )  # fmt: skip
            box.close()
        return out

    def stop(self) -> None:
        for agent in self.agents.values():
            agent.proc.stop(timeout=5)
        if self.hub is not None:
            self.hub.stop()
        if self.broker is not None:
            self.broker.stop()


def assert_nothing_lost(ledger: dict[str, Count], bench: Bench) -> None:
    """The verdict of every scenario: 0 lost and 0 duplicated, per device, with the evidence."""
    report = "\n".join(f"  {c} lost={c.lost} recovered_by_receipts>={c.recovered}" for c in ledger.values())
    timeline = "\n".join(f"  t={t:>6}s {what}" for t, what in bench.timeline)
    where = f"\nledger:\n{report}\ntimeline:\n{timeline}\nlogs in {bench.workdir}"
    for c in ledger.values():
        assert c.produced > 0, f"{c.device} produced nothing{where}"
        assert c.lost == 0, f"{c.device} lost {c.lost} event(s){where}"
        assert c.pending == 0, f"{c.device} left {c.pending} event(s) undelivered{where}"
        assert c.duplicate_ids == 0, f"{c.device}: {c.duplicate_ids} duplicated id(s){where}"
        assert c.duplicate_windows == 0, f"{c.device}: {c.duplicate_windows} re-emitted window(s){where}"
    print(where)  # kept by pytest -s / in the report of a failure elsewhere


@contextlib.contextmanager
def netns(name: str, host_ip: str, ns_ip: str) -> Iterator[Partition]:
    """A network namespace joined to the host by a veth pair; agents run inside it."""
    host_if, ns_if = f"{name[:8]}-h", f"{name[:8]}-n"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    ip("netns", "add", name)
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", name)
        ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("netns", "exec", name, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        ip("netns", "exec", name, "ip", "link", "set", ns_if, "up")
        ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield Partition(name, host_if)
    finally:
        subprocess.run(["ip", "link", "del", host_if], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@dataclass
class Partition:
    name: str
    host_if: str

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def cut(self) -> None:
        # No carrier: packets vanish in both directions and no RST tells either side.
        subprocess.run(["ip", "link", "set", self.host_if, "down"], check=True)

    def heal(self) -> None:
        subprocess.run(["ip", "link", "set", self.host_if, "up"], check=True)


def stored_events(target: str | Path, **filters: Any) -> list[dict[str, Any]]:
    """Every stored event matching ``filters`` (``EventQuery``'s), newest first, through the store's API."""
    from hub.storage import EventQuery, open_store

    store = open_store(target)
    try:
        found: list[dict[str, Any]] = []
        cursor = None
        while True:
            rows, cursor = store.list_events(EventQuery(limit=1000, cursor=cursor, **filters))
            found += rows
            if cursor is None:
                return found
    finally:
        store.close()


def stored_ids(target: str | Path, site: str | None = None, device: str | None = None) -> list[str]:
    """Every stored event id, once per stored copy: a duplicate shows twice."""
    from hub.storage import open_store

    store = open_store(target)
    try:
        return store.event_ids(site=site, device=device)
    finally:
        store.close()
