"""A PostgreSQL primary and a streaming standby of their own, on free ports, for the cluster tests.

Debian's PostgreSQL binaries run as the ``postgres`` account when the tests run as root (PostgreSQL
refuses to run as root), in a temporary folder that account owns; the system cluster is untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from vigie.netutil import free_port

__all__ = ["PG_BIN", "PgNode", "pg_binaries_available", "primary_and_standby"]

PG_BIN = Path(os.environ.get("VIGIE_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
STANDBY_NAME = "standby1"


def pg_binaries_available() -> bool:
    return all((PG_BIN / b).exists() for b in ("initdb", "pg_ctl", "pg_basebackup", "postgres"))


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], timeout: float = 60) -> None:
    done = subprocess.run(_as_postgres(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stdout}{done.stderr}")


@dataclass
class PgNode:
    """One PostgreSQL cluster: its data folder, port and log."""

    name: str
    data: Path
    port: int

    @property
    def log(self) -> Path:
        return self.data.parent / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        _run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "start"])

    def stop(self, mode: str = "fast") -> None:
        """``immediate`` is a crash: no shutdown checkpoint, clients cut off mid-statement."""
        _run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def promote(self) -> None:
        _run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "30", "promote"])

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(sql)
            return list(cur.fetchall()) if cur.description else []

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def _configure(node: PgNode, extra: dict[str, str]) -> None:
    settings = {
        "port": str(node.port),
        "listen_addresses": "'127.0.0.1'",
        "unix_socket_directories": f"'{node.data.parent}'",
        "shared_buffers": "'32MB'",
        "max_connections": "40",
        **extra,
    }
    with (node.data / "postgresql.auto.conf").open("a") as fh:
        fh.writelines(f"{k} = {v}\n" for k, v in settings.items())


@contextlib.contextmanager
def primary_and_standby(
    synchronous_commit: str | None = "on", *, standby: bool = True
) -> Iterator[tuple[PgNode, PgNode | None]]:
    """A primary (``wal_level=replica``) and a streaming standby from ``pg_basebackup -R``.

    Args:
        synchronous_commit: with a value, the standby is the primary's synchronous standby
            (``synchronous_standby_names``) and commits wait as this says (``on``: its flush,
            ``remote_apply``: its replay); None: asynchronous replication.
        standby: False for a lone primary (the baseline of the cost measurement).
    """
    root = Path(tempfile.mkdtemp(prefix="vigie-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    root.chmod(0o700)
    primary = PgNode("primary", root / "primary", free_port())
    replica = PgNode(STANDBY_NAME, root / STANDBY_NAME, free_port()) if standby else None
    try:
        _run(
            [str(PG_BIN / "initdb"), "-D", str(primary.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        )
        extra = {"wal_level": "replica", "max_wal_senders": "5", "wal_keep_size": "'256MB'"}
        if synchronous_commit is not None and standby:
            extra |= {
                "synchronous_standby_names": f"'{STANDBY_NAME}'",
                "synchronous_commit": synchronous_commit,
            }
        _configure(primary, extra)
        primary.start()
        if replica is not None:
            _run([
                str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                "-D", str(replica.data), "-R", "-X", "stream", "-c", "fast",
            ])  # fmt: skip
            conninfo = f"host=127.0.0.1 port={primary.port} user=postgres application_name={STANDBY_NAME}"
            _configure(replica, {"primary_conninfo": f"'{conninfo}'", "hot_standby": "on"})
            replica.start()
            want = "sync" if synchronous_commit is not None else "async"
            deadline = time.monotonic() + 30
            while True:
                rows = primary.query(
                    "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'"
                )
                if rows and rows[0][0] == want:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"standby not streaming ({rows}): {replica.log_text()}")
                time.sleep(0.1)
        yield primary, replica
    finally:
        for node in (replica, primary):
            if node is not None and node.running():
                with contextlib.suppress(Exception):
                    node.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
