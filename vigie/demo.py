"""`vigie demo`: a broker, the hub and a few agents on real street footage, on this machine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from vigie.broker import LocalBroker, find_mosquitto, start_broker
from vigie.exceptions import VigieError
from vigie.files import write_atomic, write_private
from vigie.netutil import free_port, port_is_free, wait_for_port

__all__ = [
    "DEBIAN_FOOTAGE",
    "HUB_USER",
    "BrokerAuth",
    "DemoOptions",
    "broker_auth",
    "find_footage",
    "run_demo",
]

DEBIAN_FOOTAGE = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
# The second agent counts the footage's left and right halves and the people crossing between them.
_SPLIT = (
    "--zone",
    "left=0,0;0.5,0;0.5,1;0,1",
    "--zone",
    "right=0.5,0;1,0;1,1;0.5,1",
    "--line",
    "middle=0.5,0.05;0.5,0.95",
)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    agents: int = 2
    duration: float | None = None
    port: int = 8000
    broker_port: int | None = None
    footage: Path | None = None
    model_dir: Path | None = None
    workdir: Path | None = None
    embedded_broker: bool = False


def find_footage(explicit: Path | None) -> Path:
    """The demo's video: given, or Debian's opencv-doc copy (installed on demand when root).

    Raises:
        VigieError: when no footage can be found, with the command that fixes it.
    """
    if explicit is not None:
        if not explicit.is_file():
            raise VigieError(f"footage {explicit} does not exist")
        return explicit
    if DEBIAN_FOOTAGE.is_file():
        return DEBIAN_FOOTAGE
    if os.geteuid() == 0 and shutil.which("apt-get"):
        _say("installing Debian's opencv-doc for its street footage (vtest.avi) ...")
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "opencv-doc"],
            check=False,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        if DEBIAN_FOOTAGE.is_file():
            return DEBIAN_FOOTAGE
    raise VigieError(
        f"no demo footage: run `sudo apt-get install opencv-doc` (it provides {DEBIAN_FOOTAGE}) "
        "or pass --footage VIDEO"
    )


def _say(text: str, stream: TextIO = sys.stderr) -> None:
    print(f"[vigie demo] {text}", file=stream, flush=True)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 (our own localhost hub)
        return json.loads(resp.read())


def _ensure_model(model_dir: Path | None) -> Path:
    from edge import model_store

    manifest = model_store.load_manifest()
    if model_dir is not None:
        model_store.locate(manifest, model_dir)
        _ensure_face_model(model_dir)
        return model_dir
    try:
        model_store.locate(manifest)
    except VigieError:
        _say(f"fetching the detector {manifest.ref} (about 9 MB, once) ...")
        model_store.fetch(manifest)
    _ensure_face_model(None)
    return model_store.default_cache_dir()


def _ensure_front_end() -> None:
    """The dashboard's map and chart libraries, like the models: fetched once, checked, never a CDN."""
    from hub import vendor_assets

    if vendor_assets.missing():
        _say("fetching the dashboard's map and chart libraries (about 6 MB, once) ...")
        vendor_assets.fetch()


def _ensure_face_model(model_dir: Path | None) -> None:
    """Snapshots are refused without the face model: the demo's devices get it like the detector."""
    from edge import face_model

    try:
        face_model.locate_face_model(model_dir)
    except VigieError:
        _say("fetching the face model for snapshots (about 7 MB, once) ...")
        face_model.fetch_face_model()


def _prepare_hub(db: Path, agents: int) -> tuple[str, str]:
    """A demo account (random password), an API token file for scripts, and where the cameras are."""
    import secrets

    from hub.auth import hash_password, issue_token
    from hub.fusion.cameras import save_locations
    from hub.storage import open_store
    from vigie.files import write_private

    store = open_store(db)
    password = secrets.token_urlsafe(12)
    if not store.add_user("demo", hash_password(password), "admin", time.time()):
        store.update_user("demo", password_hash=hash_password(password))
    token, _ = issue_token(store, "demo", ttl_s=7 * 86400, label="demo scripts")
    write_private(db.parent / "api-token", token.encode())
    # The demo cameras stand around the Vieux-Port, a few hundred metres apart (separate H3 cells).
    save_locations(store, {f"demo/cam-{i}": (43.2951 + 0.004 * (i % 3), 5.3745 + 0.006 * (i // 3 + i % 2))
                           for i in range(1, agents + 1)})  # fmt: skip
    store.close()
    return "demo", password


HUB_USER = "vigie-hub"


@dataclass(frozen=True)
class BrokerAuth:
    """The demo broker's credentials: a generated password per client, and the production ACL."""

    password_file: Path
    acl_file: Path
    password_files: dict[str, Path]


def broker_auth(workdir: Path, agents: int) -> BrokerAuth:
    """Issue 17: the demo's broker refused no one, so any local user could forge receipts. Now each
    client has its own generated password (files 0600 in the work folder) and the ACL is the one
    production uses (hub/broker_auth.py): each camera writes only its own topics."""
    from hub.broker_auth import new_password, render_device_acl, write_password_file

    folder = workdir / "broker-auth"
    devices = [("demo", f"cam-{i}") for i in range(1, agents + 1)]
    users = [HUB_USER, *(f"{site}/{device}" for site, device in devices)]
    passwords = {user: new_password() for user in users}
    files = {user: folder / (user.replace("/", "-") + ".password") for user in users}
    for user, path in files.items():
        write_private(path, passwords[user].encode())
    write_password_file(folder / "passwd", passwords.items())
    write_atomic(folder / "acl", render_device_acl(devices, HUB_USER).encode(), 0o600)
    return BrokerAuth(folder / "passwd", folder / "acl", files)


def run_demo(opts: DemoOptions) -> int:
    """Run until Ctrl-C, SIGTERM or ``opts.duration``; returns an exit code."""
    if not port_is_free(opts.port):
        raise VigieError(f"port {opts.port} is taken on 127.0.0.1: stop what uses it or pass --port")
    model_dir = _ensure_model(opts.model_dir)
    _ensure_front_end()
    footage = find_footage(opts.footage)
    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="vigie-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    broker_port = opts.broker_port or (1883 if port_is_free(1883) else free_port())

    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    broker: LocalBroker | None = None
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    cli = [sys.executable, "-m", "vigie"]
    try:
        auth = None if opts.embedded_broker or find_mosquitto() is None else broker_auth(workdir, opts.agents)
        broker = start_broker(
            workdir / "broker", broker_port, prefer="amqtt" if opts.embedded_broker else "mosquitto",
            password_file=auth.password_file if auth else None, acl_file=auth.acl_file if auth else None,
        )  # fmt: skip
        _say(f"broker: {broker.kind} on 127.0.0.1:{broker_port}" + (", passwords and the production ACL"
             if auth else ": anonymous local clients accepted (the embedded broker has no ACL)"))  # fmt: skip

        def credentials(user: str) -> list[str]:
            if auth is None:
                return []
            return ["--mqtt-username", user, "--mqtt-password-file", str(auth.password_files[user])]

        def spawn(name: str, argv: list[str]) -> None:
            log = (workdir / f"{name}.log").open("ab")
            children.append((name, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)))

        login = _prepare_hub(workdir / "hub.sqlite", opts.agents)
        spawn(
            "hub",
            [
                *cli,
                "hub",
                "serve",
                "--port",
                str(opts.port),
                "--db",
                str(workdir / "hub.sqlite"),
                "--broker",
                f"127.0.0.1:{broker_port}",
                *credentials(HUB_USER),
            ],
        )
        if not wait_for_port(opts.port, timeout=30):
            raise VigieError(f"the hub did not start; see {workdir / 'hub.log'}")
        for i in range(1, opts.agents + 1):
            zones = [] if i % 2 else list(_SPLIT)
            spawn(
                f"cam-{i}",
                [
                    *cli,
                    "edge",
                    "run",
                    "--site",
                    "demo",
                    "--device",
                    f"cam-{i}",
                    "--source",
                    str(footage),
                    "--loop",
                    "--realtime",
                    "--fps-cap",
                    "5",
                    "--threads",
                    "1",
                    "--window",
                    "10",
                    "--k",
                    "3",  # the hub refuses events counted with a k under its minimum (3)
                    "--model-dir",
                    str(model_dir),
                    "--outbox",
                    str(workdir / f"cam-{i}.outbox.sqlite"),
                    "--broker",
                    f"127.0.0.1:{broker_port}",
                    *credentials(f"demo/cam-{i}"),
                    *zones,
                ],
            )
        base = f"http://127.0.0.1:{opts.port}"
        print(
            f"\nVigie demo is running: {opts.agents} agents replaying {footage.name} in real time.\n"
            f"  dashboard {base}/dashboard/   log in as {login[0]} / {login[1]}\n"
            f"  events  {base}/v1/events    (one per zone every 10 s, anonymised counts;\n"
            f"          Authorization: Bearer $(cat {workdir / 'api-token'}))\n"
            f"  devices {base}/v1/devices\n"
            f"  health  {base}/healthz\n"
            f"  API     {base}/docs\n"
            f"  logs    {workdir}\n"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        started = time.monotonic()
        while not stop.wait(10.0):
            for name, proc in children:
                if proc.poll() is not None:
                    raise VigieError(f"{name} exited with code {proc.returncode}; see {workdir / name}.log")
            try:
                ingest = _get_json(f"{base}/healthz").get("ingest") or {}  # /healthz is public
                _say(f"events stored: {ingest.get('stored', 0)}, quarantined: {ingest.get('quarantined', 0)}")
            except OSError as exc:
                _say(f"hub not answering: {exc}")
            if opts.duration is not None and time.monotonic() - started >= opts.duration:
                break
        return 0
    finally:
        _say("stopping ...")
        for _, proc in reversed(children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in reversed(children):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if broker is not None:
            broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _say(f"stopped; databases and logs kept in {workdir}")
