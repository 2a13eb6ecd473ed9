"""Shared fixtures: ../shared data, a private Mosquitto, the hub under uvicorn, agent processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vigie.broker import LocalBroker, find_mosquitto, start_broker
from vigie.netutil import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def need(path: Path) -> Path:
    """Return a file under ../shared, or skip (fail under CI=true) when it is absent."""
    if not path.exists():
        message = f"{path} is missing: tests read real data from ../shared (see shared/README.md)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def need_service(ok: bool, what: str) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(f"{what} is required under CI=true")
        pytest.skip(f"{what} is not available on this machine")


@pytest.fixture(scope="session")
def model_dir() -> Path:
    need(SHARED / "models" / "mobilenet_ssd_v2_coco_quant_postprocess.tflite")
    return SHARED / "models"


@pytest.fixture(scope="session")
def bus_jpg() -> Path:
    return need(SHARED / "media" / "bus.jpg")


@pytest.fixture(scope="session")
def zidane_jpg() -> Path:
    return need(SHARED / "media" / "zidane.jpg")


@pytest.fixture(scope="session")
def vtest_avi() -> Path:
    return need(SHARED / "media" / "vtest.avi")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A private Mosquitto on a free port (not the system one), stopped after the test."""
    need_service(find_mosquitto() is not None, "mosquitto")
    b = start_broker(tmp_path / "broker", free_port())
    yield b
    b.stop()


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vigie", *args]


@dataclass
class Hub:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as resp:  # noqa: S310
            return json.loads(resp.read())

    def wait_for(self, path: str, predicate: Any, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = self.get(path)
            if predicate(last):
                return last
            time.sleep(0.2)
        raise AssertionError(f"{path} never satisfied the condition; last answer: {last}")


@pytest.fixture
def hub(tmp_path: Path, broker: LocalBroker) -> Iterator[Hub]:
    """`vigie hub serve` under uvicorn, ingesting from the private broker."""
    port = free_port()
    log = tmp_path / "hub.log"
    with log.open("wb") as fh:
        # A closed test bench: authentication off (tests/hub/test_access.py covers it).
        env = {**os.environ, "VIGIE_HUB_AUTH": "off"}
        proc = subprocess.Popen(
            cli(
                "hub",
                "serve",
                "--port",
                str(port),
                "--db",
                str(tmp_path / "hub.sqlite"),
                "--broker",
                f"127.0.0.1:{broker.port}",
            ),
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    h = Hub(f"http://127.0.0.1:{port}", proc, log)
    try:
        assert wait_for_port(port, timeout=30), log.read_text()
        h.wait_for("/healthz", lambda r: r["ingest"]["connected"], timeout=15)
        yield h
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


PG_DSN = os.environ.get("VIGIE_TEST_PG", "host=127.0.0.1 port=5432 dbname=test")


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Each storage backend in turn: the same contract suite runs against both."""
    if request.param == "sqlite":
        from hub.storage import SQLiteStore

        s: Any = SQLiteStore(tmp_path / "hub.sqlite")
        yield s
        s.close()
        return
    yield from _pg_store()


@pytest.fixture
def pg_store() -> Iterator[Any]:
    """A PostgreSQL store in a schema of its own, dropped afterwards."""
    yield from _pg_store()


def _pg_store() -> Iterator[Any]:
    need_service(postgres_available(), f"PostgreSQL ({PG_DSN})")
    import uuid

    from hub.storage.postgres import PostgresStore

    s = PostgresStore(PG_DSN, schema=f"t_{uuid.uuid4().hex[:12]}")
    try:
        yield s
    finally:
        s.drop_schema()
        s.close()
