"""A PgBouncer of its own for tests and benches: transaction mode, a small server pool, a free port.

Debian's ``pgbouncer`` refuses to run as root: as root it runs as the ``postgres`` account (``-u``),
in a temporary folder that account can read. The system service is never started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vigie.netutil import free_port, wait_for_port

__all__ = ["Bouncer", "descendants", "pgbouncer_binary", "running_pgbouncer", "server_ports"]


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None
    )


@dataclass
class Bouncer:
    port: int
    pid: int
    pool_size: int
    folder: Path

    def url(self, database: str = "test", user: str = "root") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def log(self) -> str:
        path = self.folder / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""


def server_ports(pid: int, server_port: int = 5432) -> set[int]:
    """Local ports of the process's TCP connections to PostgreSQL: its server connections, as the
    kernel sees them (Linux ``/proc``; ``pg_stat_activity.client_port`` names the same ports)."""
    inodes: set[str] = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):  # closed meanwhile
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    except OSError:  # the process is gone
        return set()
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == server_port:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def descendants(pid: int) -> list[int]:
    """``pid`` and every process under it (uvicorn's workers), from ``/proc``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = [pid], [pid]
    while todo:
        parent = todo.pop()
        children = [child for child, p in parents.items() if p == parent]
        found += children
        todo += children
    return found


@contextmanager
def running_pgbouncer(
    *, pool_size: int = 3, server: str = "host=127.0.0.1 port=5432 dbname=test", user: str = "root"
) -> Iterator[Bouncer]:
    """PgBouncer in transaction mode on a free port, database ``test`` → ``server``, at most
    ``pool_size`` server connections (``max_db_connections``), clients trusted."""
    binary = pgbouncer_binary()
    if binary is None:
        raise FileNotFoundError("pgbouncer is not installed (apt-get install pgbouncer)")
    folder = Path(tempfile.mkdtemp(prefix="vigie-pgbouncer-"))
    port = free_port()
    (folder / "users.txt").write_text(f'"{user}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        f"""[databases]
test = {server} user={user}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder}/users.txt
pool_mode = transaction
default_pool_size = {pool_size}
max_db_connections = {pool_size}
max_client_conn = 2000
admin_users = {user}
logfile = {folder}/pgbouncer.log
"""
    )
    as_root = os.geteuid() == 0
    if as_root:
        shutil.chown(folder, "postgres", "postgres")
        for name in ("users.txt", "pgbouncer.ini"):
            shutil.chown(folder / name, "postgres", "postgres")
    cmd = [binary, *(["-u", "postgres"] if as_root else []), str(folder / "pgbouncer.ini")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        if not wait_for_port(port, timeout=15):
            proc.kill()
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            log = (folder / "pgbouncer.log").read_text() if (folder / "pgbouncer.log").exists() else ""
            raise RuntimeError(f"pgbouncer did not listen on {port}: {out}{log}"[-2000:])
        yield Bouncer(port, proc.pid, pool_size, folder)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(folder, ignore_errors=True)
