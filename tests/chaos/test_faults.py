"""Fault injection across real processes: every scenario ends with 0 lost and 0 duplicated, per device.

Each scenario runs a private Mosquitto, the hub under uvicorn and three
agents on 30 s of real footage (the TFLite model, ten zones, 10 s windows: one
event a second each), injects its fault, lets the agents finish and drain,
and then compares, device by device, what each outbox committed (its
AUTOINCREMENT counter) with the distinct event ids in the hub's store. The
agents exit 0 only once the hub's receipts have emptied their outboxes: no
human, no restart by hand, beyond the restarts a supervisor (systemd) makes.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.outbox import Outbox
from tests.chaos.harness import (
    SITE,
    Agent,
    Bench,
    Proc,
    assert_nothing_lost,
    cli,
    make_clip,
    netns,
    stored_events,
    stored_ids,
)
from tests.conftest import IN_CI, PG_DSN, need_service, postgres_available
from tests.edge.test_outbox import small_disk
from vigie import wire

pytestmark = pytest.mark.chaos

CLIP_S = 30
DEVICES = ("cam-1", "cam-2", "cam-3")


def _need_root() -> None:
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("the chaos suite needs root (network namespaces, tmpfs) under CI=true")
        pytest.skip("the chaos suite needs root (network namespaces, tmpfs)")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, vtest_avi: Path) -> Path:
    return make_clip(vtest_avi, tmp_path_factory.mktemp("clip") / "clip.avi", CLIP_S)


@pytest.fixture
def bench(tmp_path: Path, model_dir: Path, clip: Path) -> Iterator[Bench]:
    _need_root()
    b = Bench(tmp_path, model_dir, clip)
    yield b
    b.stop()


def _sleep_to_window_edge(delay: float) -> None:
    """Sleep until ``delay`` seconds after the next 10 s boundary: when agents write their windows."""
    now = time.time()
    time.sleep(10 - now % 10 + delay)


def _finish(bench: Bench, timeout: float = 300) -> dict[str, int]:
    codes = bench.wait_agents(timeout)
    logs = {d: a.proc.text()[-3000:] for d, a in bench.agents.items() if codes[d] != 0}
    assert all(c == 0 for c in codes.values()), f"agents did not drain: {codes}\n{logs}"
    return codes


def test_broker_killed_mid_stream_while_the_hub_is_behind(bench: Bench) -> None:
    bench.start_broker()
    bench.start_hub()
    for device in DEVICES:
        bench.start_agent(device)
    time.sleep(8)
    assert bench.hub is not None
    # The hub stops reading: two windows' events queue in the broker, in its memory only.
    bench.hub.signal(signal.SIGSTOP)
    bench.mark("hub paused (SIGSTOP)")
    time.sleep(20)
    bench.kill9_broker()
    time.sleep(3)
    bench.start_broker()
    bench.hub.signal(signal.SIGCONT)
    bench.mark("hub resumed")
    _finish(bench)
    bench.stop()
    ledger = bench.ledger()
    assert_nothing_lost(ledger, bench)
    # What the killed broker had acknowledged and lost came back through the receipts.
    assert sum(c.resent for c in ledger.values()) > 0, ledger


def test_network_partition_of_two_minutes(tmp_path: Path, model_dir: Path, clip: Path) -> None:
    _need_root()
    name = f"vg{random.randrange(16**6):06x}"
    octet = random.randrange(1, 250)
    host_ip, ns_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"
    with netns(name, host_ip, ns_ip) as part:
        bench = Bench(tmp_path, model_dir, clip, broker_host=host_ip)
        try:
            bench.start_broker()
            bench.start_hub()
            for device in DEVICES:
                bench.start_agent(device, prefix=part.prefix)
            bench.start_agent("cam-host")  # on the broker's side of the cut: never affected
            time.sleep(8)
            part.cut()
            bench.mark("partition: agents cut off from the broker")
            cut_at = time.time()
            time.sleep(120)
            part.heal()
            bench.mark("partition healed")
            healed_at = time.time()
            _finish(bench, timeout=400)
            bench.stop()
            ledger = bench.ledger()
            assert_nothing_lost(ledger, bench)
            # The agent outside the partition kept delivering during it.
            during = sum(
                cut_at + 5 <= e["received_at"] <= healed_at
                for e in stored_events(bench.store_target, device="cam-host")
            )
            assert during > 0
        finally:
            bench.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """The hub's store for a scenario: SQLite, or the production PostgreSQL in a schema of its own."""
    if request.param == "sqlite":
        yield None
        return
    need_service(postgres_available(), f"PostgreSQL ({PG_DSN})")
    import psycopg

    schema = f"chaos_{random.randrange(16**10):010x}"
    with psycopg.connect(PG_DSN, autocommit=True) as pg:
        pg.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"postgresql://127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as pg:
            pg.execute(f"DROP SCHEMA {schema} CASCADE")


def test_hub_killed_mid_batch_three_times(
    tmp_path: Path, model_dir: Path, clip: Path, store_url: str | None
) -> None:
    _need_root()
    bench = Bench(tmp_path, model_dir, clip, store_url=store_url)
    try:
        bench.start_broker()
        bench.start_hub()
        for device in DEVICES:
            bench.start_agent(device)
        # Load besides the agents: 400 simulated devices, 2,000 events in a burst at each window edge.
        sim = subprocess.Popen(
            cli("sim", "--devices", "400", "--duration", "35", "--zones", "5", "--window", "10",
                "--site", "sim", "--connect-rate", "400",
                "--broker", f"{bench.broker_host}:{bench.broker_port}"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        for _ in range(3):
            _sleep_to_window_edge(0.3)  # the burst is being written
            bench.kill9_hub()
            time.sleep(2)
            bench.start_hub()
        out, _ = sim.communicate(timeout=120)
        _finish(bench)
        found = re.search(r"acknowledged by the broker (\d+) \(failed (\d+)\)", out)
        assert found, out
        acked, failed = int(found.group(1)), int(found.group(2))
        receipts = r"receipted by the hub (\d+) of (\d+), sent again (\d+), unreceipted (\d+)"
        receipted = re.search(receipts, out)
        assert receipted, out
        got, produced, resent, unreceipted = map(int, receipted.groups())
        time.sleep(3)
        bench.stop()
        ledger = bench.ledger()
        assert_nothing_lost(ledger, bench)
        copies = stored_ids(bench.store_target, site="sim")
        rows, ids = len(copies), len(set(copies))
        (deliveries,) = bench.query("SELECT sum(events) FROM devices WHERE site = 'sim'") or (0,)
        # Redelivered by the broker after a kill between a commit and its acknowledgement: dropped by id.
        print(f"simulated fleet: produced {produced}, acked {acked}, failed {failed}, sent again {resent}, "
              f"stored {ids}, duplicates {deliveries - ids}")  # fmt: skip
        # What the broker acknowledged is all stored, once; and, as the simulated devices keep their
        # events until the hub's receipt (resending the rest), everything they produced.
        assert rows == ids
        assert acked <= ids <= acked + failed, (acked, failed, ids)
        assert unreceipted == 0, out
        assert got == produced == ids, out
        assert acked > 1000
    finally:
        bench.stop()


def test_agents_killed_while_writing_their_outbox(bench: Bench) -> None:
    bench.start_broker()
    bench.start_hub()
    for device in DEVICES:
        bench.start_agent(device)
    time.sleep(6)  # models loaded, frames flowing: the next edge closes a window
    for round_ in range(3):
        # A window closes with the first frame past the 10 s edge (2 frames/s): the agents write
        # it within half a second of the edge. Kill them at a random moment of that half second.
        _sleep_to_window_edge(random.uniform(0.0, 0.5))
        for agent in bench.agents.values():
            agent.proc.kill9()
        bench.mark(f"agents killed (SIGKILL), round {round_ + 1}")
        for device in DEVICES:
            bench.start_agent(device)  # as systemd's Restart=always would
    _finish(bench)
    bench.stop()
    assert_nothing_lost(bench.ledger(), bench)


def _past_events(device: str, n: int) -> list[tuple[str, bytes, int, str]]:
    """A backlog from an earlier outage: valid events of this device, a day old."""
    start = wire.coarsen(time.time() - 86_400, 10)
    rows = []
    for i in range(n):
        ws = start + 10 * (i // 10)
        e = wire.ZoneCountEvent(
            id=wire.new_event_id(ws), site=SITE, device=device, window_start=ws, window_s=10, k=3,
            model="ssd-mobilenet-v2-coco-quant@1.0.0", zone=f"z{i % 10}", frames=20,
            counts={"person": 3}, mean_counts={"person": 2.5},
        )  # fmt: skip
        rows.append((wire.topic(SITE, device, wire.Channel.EVENT), wire.encode(e), 1, e.id))
    return rows


def test_agent_killed_with_its_disk_at_the_limit(bench: Bench) -> None:
    with small_disk(bench.workdir / "small-disk", "4m") as mnt:
        device = "cam-q"
        outbox = mnt / "o.sqlite"
        box = Outbox(outbox)
        box.put_many(_past_events(device, 3000))  # ~1 MB waiting from an earlier outage
        box.close()
        # Fill the disk up to the outbox's reserve (2 MB) plus a little: the next windows cross it.
        free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
        (mnt / "filler").write_bytes(bytes(max(0, free - 2_000_000 - 300_000)))
        bench.start_broker()  # the hub is down: nothing is confirmed, the outbox only grows
        argv = bench.agent_argv(device)
        argv[argv.index("--outbox") + 1] = str(outbox)

        def run() -> None:
            proc = Proc(argv, bench.workdir / f"{device}.log").start()
            bench.agents[device] = Agent(device, outbox, proc)

        run()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and _dropped(outbox) == 0:
            time.sleep(1)
        assert _dropped(outbox) > 0, bench.agents[device].proc.text()
        bench.mark("disk reserve reached: oldest events dropped and counted")
        _sleep_to_window_edge(random.uniform(0.0, 0.5))
        bench.agents[device].proc.kill9()
        bench.mark("agent killed (SIGKILL) while writing")
        bench.start_hub()
        run()
        _finish(bench)
        beat = _device_heartbeat(bench, device)
        bench.stop()
        ledger = bench.ledger()
        assert_nothing_lost(ledger, bench)
        count = ledger[device]
        assert count.dropped > 0
        assert count.stored + count.dropped == count.produced
        # The drop is not silent: the heartbeat told the hub.
        assert beat["outbox_dropped"] == count.dropped
        st = os.statvfs(mnt)
        assert st.f_bavail * st.f_frsize > 1_000_000  # the reserve held
        bench.stop()


def _dropped(outbox: Path) -> int:
    """The outbox's drop counter, read without disturbing the agent that owns it."""
    with contextlib.closing(sqlite3.connect(f"file:{outbox}?mode=ro", uri=True, timeout=10)) as db:
        row = db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
    return int(row[0]) if row else 0


def _device_heartbeat(bench: Bench, device: str) -> dict[str, object]:
    url = f"http://127.0.0.1:{bench.hub_port}/v1/devices"
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(url, timeout=5) as resp:
            devices = json.loads(resp.read())["data"]
        found = [d for d in devices if d["device"] == device and d.get("heartbeat")]
        if found or time.monotonic() > deadline:
            assert found, devices
            return found[0]["heartbeat"]  # type: ignore[no-any-return]
        time.sleep(1)


def test_slow_consumer_with_the_broker_queue_overflowing(tmp_path: Path, model_dir: Path, clip: Path) -> None:
    _need_root()
    # A short broker queue, so that a stalled store overflows it within seconds.
    bench = Bench(tmp_path, model_dir, clip, max_queued_messages=10)
    try:
        bench.start_broker()
        bench.start_hub()
        for device in DEVICES:
            bench.start_agent(device)
        time.sleep(5)
        lock = sqlite3.connect(bench.db, timeout=30, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # the store stalls: every write waits, then fails, and retries
        bench.mark("store locked")
        time.sleep(25)
        lock.execute("ROLLBACK")
        lock.close()
        bench.mark("store released")
        _finish(bench)
        bench.stop()
        assert bench.broker is not None
        assert "Outgoing messages are being dropped" in bench.broker.log_path.read_text()
        ledger = bench.ledger()
        assert_nothing_lost(ledger, bench)
        assert sum(c.resent for c in ledger.values()) > 0
    finally:
        bench.stop()


def test_clock_skew_between_devices_and_hub(bench: Bench) -> None:
    if not Path("/usr/bin/faketime").exists():
        if IN_CI:
            pytest.fail("faketime is required under CI=true (scripts/bootstrap dev installs it)")
        pytest.skip("faketime is not installed")
    bench.start_broker()
    bench.start_hub()
    skews = {"cam-behind": "-2h", "cam-ahead": "+10m", "cam-right": "+0"}
    for device, offset in skews.items():
        bench.start_agent(device, prefix=["faketime", "-f", offset])
    _finish(bench)
    beats = {d: _device_heartbeat(bench, d) for d in skews}
    bench.stop()
    assert_nothing_lost(bench.ledger(), bench)
    # Stored as the devices sent them, and the offset is plain to see for the operator.
    assert -7300 < int(beats["cam-behind"]["clock_skew_s"]) < -7100  # type: ignore[call-overload]
    assert 500 < int(beats["cam-ahead"]["clock_skew_s"]) < 700  # type: ignore[call-overload]
    assert beats["cam-right"]["clock_skew_s"] == 0
    # The fleet operator's table says it too.
    table = subprocess.run(
        cli("hub", "devices", "--db", bench.store_url), capture_output=True, text=True, check=True
    ).stdout
    lines = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert "-2h00m" in lines[f"{SITE}/cam-behind"], table
    assert re.search(r"\+(9|10)m\b", lines[f"{SITE}/cam-ahead"]), table
    assert " ok " in lines[f"{SITE}/cam-right"], table
    behind = stored_events(bench.store_target, device="cam-behind")[0]["window_start"]
    assert behind < time.time() - 7000
