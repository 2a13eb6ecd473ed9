"""Start a local NATS Server cluster with JetStream and MQTT, for the tests, the benchmarks and a demo.

A production city runs three NATS nodes on three hosts; here the three run on
loopback ports of one machine, each with its own JetStream store, its own
client (NATS) port, MQTT port and monitoring port, and routes to the other two.
Devices speak MQTT 3.1.1 to any node (NATS maps topic ``a/b/c`` to subject
``a.b.c``); the hub reads a replicated JetStream stream (:mod:`hub.jetstream_source`).

Each node's configuration file is rendered from :class:`NatsNode` and
:class:`NatsClusterConfig` (pure), so a deployment can render the same files.
NATS's MQTT needs JetStream and a ``server_name`` on every node, which the
model makes required.

With :class:`NatsTls` (the hub's device CA folder, :mod:`hub.pki`), the MQTT port
asks every device for a certificate from that CA and maps it to a NATS user
(``verify_and_map``): one user per enrolled device, named by its certificate's
URI (``urn:vigie:device:<site>:<device>``), allowed its own subjects only
(:func:`device_user`). The hub is a password user on the NATS client port, which
is TLS too. The same enrolment serves Mosquitto and NATS.

Longer than 400 lines because the configuration model, its users and permissions, its
rendering and the local cluster that runs it change together (a new option touches all four).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vigie import mqtt_codec, wire
from vigie.exceptions import VigieError
from vigie.files import write_private
from vigie.netutil import free_port, wait_for_port

__all__ = [
    "NatsCluster",
    "NatsClusterConfig",
    "NatsNode",
    "NatsTls",
    "NatsUser",
    "cluster_users",
    "device_user",
    "device_user_name",
    "find_nats_server",
    "hub_user",
    "plan_cluster",
    "render_node",
    "start_nats_cluster",
]

_SLUG = r"^[a-z0-9][a-z0-9_-]{0,31}$"


class NatsUser(BaseModel):
    """An account user with what it may publish and subscribe to (NATS subjects, ``>`` and ``*`` allowed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    user: str = Field(min_length=1, description="User name (the MQTT username too).")
    password: str | None = Field(
        default=None, min_length=1, repr=False,
        description="Its password; None for a user a certificate names (verify_and_map, MQTT only).",
    )  # fmt: skip
    publish: tuple[str, ...] = Field(default=(">",), description="Subjects it may publish to.")
    subscribe: tuple[str, ...] = Field(default=(">",), description="Subjects it may subscribe to.")
    connection_types: tuple[Literal["STANDARD", "MQTT"], ...] = Field(
        default=(), description="How it may connect (NATS client protocol, MQTT); empty: any."
    )


class NatsTls(BaseModel):
    """TLS of the cluster's client and MQTT ports: the broker's key pair and the device CA.

    The files are the hub's device CA folder's (``vigie hub pki init``): devices enrolled
    once reach Mosquitto or NATS with the same certificate.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    cert_file: Path = Field(description="The broker's certificate (signed by the device CA).")
    key_file: Path = Field(description="Its private key.")
    ca_file: Path = Field(description="The device CA: it signed every device certificate accepted.")
    handshake_timeout_s: float = Field(default=5.0, gt=0, description="TLS handshake limit.")

    @classmethod
    def from_ca_folder(cls, folder: Path) -> NatsTls:
        """The files of a CA folder made by ``vigie hub pki init`` (ca.crt, broker.crt, broker.key)."""
        return cls(cert_file=folder / "broker.crt", key_file=folder / "broker.key", ca_file=folder / "ca.crt")


class NatsNode(BaseModel):
    """One server of the cluster: its name, ports and JetStream folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    server_name: str = Field(pattern=_SLUG, description="Unique in the cluster (MQTT needs one).")
    host: str = Field(default="127.0.0.1", description="Address every listener binds.")
    client_port: int = Field(ge=1, le=65535, description="NATS client port (the hub connects here).")
    cluster_port: int = Field(ge=1, le=65535, description="Route port (the other nodes connect here).")
    mqtt_port: int = Field(ge=1, le=65535, description="MQTT 3.1.1 port for devices.")
    http_port: int = Field(ge=1, le=65535, description="Monitoring port (/healthz, /jsz).")
    store_dir: Path = Field(description="JetStream's file store for this node.")

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.client_port}"


class NatsClusterConfig(BaseModel):
    """The whole cluster: its nodes and, optionally, users (no users: anonymous, loopback benches only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(default="vigie", pattern=_SLUG, description="Cluster name (same on every node).")
    nodes: tuple[NatsNode, ...] = Field(
        min_length=1, description="The servers; 3 for a quorum that survives one loss."
    )
    users: tuple[NatsUser, ...] = Field(default=(), description="Users; empty: anonymous access.")
    tls: NatsTls | None = Field(
        default=None, description="TLS on the client and MQTT ports, devices mapped by certificate."
    )
    #: MQTT's own streams (sessions, retained messages) are replicated like the events' stream.
    mqtt_stream_replicas: int = Field(default=3, ge=1, le=5, description="Replicas of NATS's MQTT streams.")
    #: A cap JetStream reserves against, not space it takes: the events' stream (1 GiB by default)
    #: and MQTT's session streams must fit under it.
    max_file_store: str = Field(default="8G", description="JetStream disk per node.")

    @model_validator(mode="after")
    def _certificate_users_need_tls(self) -> Self:
        for u in self.users:
            if u.password is None and (self.tls is None or u.connection_types != ("MQTT",)):
                # Without a password nor a certificate check, anyone could log in under the name.
                raise ValueError(
                    f"user {u.user!r} has no password: it must be a certificate user, which needs "
                    f"tls set on the cluster and connection_types ('MQTT',) (has {u.connection_types}); "
                    "give it a password or use device_user()"
                )
        return self

    @property
    def urls(self) -> list[str]:
        """The NATS client URLs (``tls://`` once TLS is on: the client must then verify the broker)."""
        scheme = "tls" if self.tls else "nats"
        return [f"{scheme}://{n.host}:{n.client_port}" for n in self.nodes]


def device_user_name(site: str, device: str) -> str:
    """The NATS user a device certificate maps to: its URI (``hub.pki`` puts it in every device certificate).

    NATS's ``verify_and_map`` tries the certificate's e-mail addresses, DNS names and URIs before
    its subject; the URI is one exact string, unlike a subject's RFC 2253 spelling.
    """
    wire.topic(site, device, wire.Channel.EVENT)  # validates both slugs
    return f"urn:vigie:device:{site}:{device}"


def device_user(site: str, device: str) -> NatsUser:
    """One enrolled device: MQTT only, its own subjects only (as the Mosquitto ACL of ``hub.broker_auth``).

    A topic ``a/b/c`` is the subject ``a.b.c``. ``$MQTT.sub.>`` is where NATS delivers a QoS 1
    subscription (the OTA notices); NATS refuses an MQTT client's own subscription to it, so it
    opens nothing else.
    """
    own = f"{wire.TOPIC_ROOT.replace('/', '.')}.{site}.{device}"
    sends = (wire.Channel.EVENT, wire.Channel.HEARTBEAT, wire.Channel.STATUS, wire.Channel.OTA_STATE)
    reads = (wire.Channel.RECEIPT, wire.Channel.OTA, wire.Channel.CMD)
    return NatsUser(
        user=device_user_name(site, device), connection_types=("MQTT",),
        publish=tuple(f"{own}.{c.value}" for c in sends),
        subscribe=(*(f"{own}.{c.value}" for c in reads), "$MQTT.sub.>"),
    )  # fmt: skip


def hub_user(name: str, password: str) -> NatsUser:
    """The hub: NATS protocol only; JetStream's API and acks, the events; it sends receipts, OTA, commands."""
    root = wire.TOPIC_ROOT.replace("/", ".")
    sends = (wire.Channel.RECEIPT, wire.Channel.OTA, wire.Channel.CMD)
    return NatsUser(
        user=name, password=password, connection_types=("STANDARD",),
        publish=("$JS.API.>", "$JS.ACK.>", "_INBOX.>", *(f"{root}.*.*.{c.value}" for c in sends)),
        subscribe=("_INBOX.>", f"{root}.>"),
    )  # fmt: skip


def cluster_users(devices: Iterable[tuple[str, str]], hub: NatsUser) -> tuple[NatsUser, ...]:
    """The hub's user and one per ``(site, device)`` (the enrolled, unrevoked ones), sorted."""
    return (hub, *(device_user(s, d) for s, d in sorted(set(devices))))


def _quote(value: str) -> str:
    return json.dumps(value)  # NATS's configuration accepts JSON strings


def _tls_block(tls: NatsTls, indent: str, *, verify_and_map: bool) -> list[str]:
    lines = [
        "tls {",
        f"  cert_file: {_quote(str(tls.cert_file))}",
        f"  key_file: {_quote(str(tls.key_file))}",
        f"  ca_file: {_quote(str(tls.ca_file))}",
        f"  timeout: {tls.handshake_timeout_s}",
        *(["  verify_and_map: true"] if verify_and_map else []),
        "}",
    ]
    return [indent + line for line in lines]


def _user_entry(u: NatsUser) -> str:
    pub = ", ".join(_quote(s) for s in u.publish)
    sub = ", ".join(_quote(s) for s in u.subscribe)
    fields = [f"user: {_quote(u.user)}"]
    if u.password is not None:
        fields.append(f"password: {_quote(u.password)}")
    fields.append(f"permissions: {{publish: [{pub}], subscribe: [{sub}]}}")
    if u.connection_types:
        fields.append(f"allowed_connection_types: [{', '.join(_quote(t) for t in u.connection_types)}]")
    return "{" + ", ".join(fields) + "}"


def render_node(cluster: NatsClusterConfig, node: NatsNode) -> str:
    """The configuration file of ``node`` (pure)."""
    routes = ", ".join(_quote(f"nats-route://{n.host}:{n.cluster_port}") for n in cluster.nodes if n != node)
    replicas = min(cluster.mqtt_stream_replicas, len(cluster.nodes))
    lines = [
        f"server_name: {_quote(node.server_name)}",
        f"listen: {_quote(f'{node.host}:{node.client_port}')}",
        f"http: {_quote(f'{node.host}:{node.http_port}')}",
        # A wire message is at most 8 KiB; NATS's default (1 MiB) would let a device push far more.
        "max_payload: 65536",
        "jetstream {",
        f"  store_dir: {_quote(str(node.store_dir))}",
        f"  max_file_store: {cluster.max_file_store}",
        "  max_memory_store: 256M",
        "}",
        "mqtt {",
        f"  listen: {_quote(f'{node.host}:{node.mqtt_port}')}",
        f"  stream_replicas: {replicas}",
        # A device must show a certificate from the device CA, and that certificate names its user.
        *(_tls_block(cluster.tls, "  ", verify_and_map=True) if cluster.tls else []),
        "}",
        # The NATS client port (the hub): TLS, the hub proves itself with its password.
        *(_tls_block(cluster.tls, "", verify_and_map=False) if cluster.tls else []),
    ]
    if len(cluster.nodes) > 1:
        lines += [
            "cluster {",
            f"  name: {_quote(cluster.name)}",
            f"  listen: {_quote(f'{node.host}:{node.cluster_port}')}",
            f"  routes: [{routes}]",
            "}",
        ]
    if cluster.users:
        users = [f"    {_user_entry(u)}" for u in cluster.users]
        lines += ["accounts {", "  vigie {", "    jetstream: enabled", "    users: [", *users, "    ]",
                  "  }", "}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def plan_cluster(
    workdir: Path, size: int = 3, *, users: tuple[NatsUser, ...] = (), tls: NatsTls | None = None
) -> NatsClusterConfig:
    """A cluster of ``size`` nodes on free loopback ports, stores under ``workdir``."""
    nodes = []
    for i in range(size):
        name = f"n{i + 1}"
        node = NatsNode(
            server_name=name, store_dir=workdir / name / "js", client_port=free_port(),
            cluster_port=free_port(), mqtt_port=free_port(), http_port=free_port(),
        )  # fmt: skip
        nodes.append(node)
    return NatsClusterConfig(nodes=tuple(nodes), users=users, tls=tls)


def find_nats_server() -> str | None:
    """Path of nats-server (Debian's package puts it in /usr/sbin, often not on PATH)."""
    return shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/local/bin/nats-server") if Path(p).is_file()), None
    )


@dataclass
class NatsCluster:
    """The servers we started; a test may kill one and start it again."""

    config: NatsClusterConfig
    workdir: Path
    binary: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: With TLS, how :meth:`mqtt_ready` shakes hands: a device certificate the cluster maps to a user.
    mqtt_tls: ssl.SSLContext | None = None

    def node(self, name: str) -> NatsNode:
        for n in self.config.nodes:
            if n.server_name == name:
                return n
        raise VigieError(
            f"no node {name!r} in the cluster; nodes: {[n.server_name for n in self.config.nodes]}"
        )

    def log_path(self, name: str) -> Path:
        return self.workdir / name / "nats.log"

    def start_node(self, name: str) -> None:
        node = self.node(name)
        folder = self.workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "nats.conf"
        write_private(conf, render_node(self.config, node).encode())  # it holds the hub's password
        with self.log_path(name).open("ab") as log:
            self.processes[name] = subprocess.Popen(
                [self.binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        if not wait_for_port(node.client_port, host=node.host, timeout=15):
            self.stop()
            raise VigieError(f"nats-server {name} did not start on {node.url}; see {self.log_path(name)}")

    def reload(self, users: tuple[NatsUser, ...]) -> None:
        """Rewrite every node's file with ``users`` and signal the running nodes to re-read it (SIGHUP).

        A device enrolled since may connect once its node has reloaded; the connections of a user
        no longer listed (revoked) are closed by NATS.
        """
        # Checked as at the start, before anything is written: a refused list leaves the cluster as it was.
        self.config = NatsClusterConfig.model_validate(
            {**self.config.model_dump(), "users": [u.model_dump() for u in users]}
        )
        for name, proc in self.processes.items():
            # Atomic: a node reading its file on the signal never sees half of it.
            write_private(
                self.workdir / name / "nats.conf", render_node(self.config, self.node(name)).encode()
            )
            proc.send_signal(signal.SIGHUP)

    def kill(self, name: str) -> None:
        """SIGKILL one node: no goodbye to its clients or routes, as in a power cut."""
        proc = self.processes.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def healthy(self, name: str) -> bool:
        """The node's /healthz: up, and its JetStream caught up with the cluster (a leader is known)."""
        node = self.node(name)
        try:
            with urllib.request.urlopen(f"http://{node.host}:{node.http_port}/healthz", timeout=2) as r:
                return bool(json.load(r).get("status") == "ok")
        except (OSError, ValueError):
            return False

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until every running node says healthy.

        Raises:
            VigieError: naming the nodes still unhealthy and their logs.
        """
        deadline = time.monotonic() + timeout
        while True:
            sick = [n for n in self.processes if not self.healthy(n)]
            if not sick:
                return
            if time.monotonic() > deadline:
                logs = ", ".join(str(self.log_path(n)) for n in sick)
                raise VigieError(f"NATS nodes {sick} not healthy after {timeout:.0f} s; see {logs}")
            time.sleep(0.2)

    def mqtt_ready(self, name: str, timeout: float = 30.0) -> bool:
        """One MQTT CONNECT answered by the node: its MQTT side (session streams) is set up.

        NATS creates an account's MQTT streams on the first MQTT connection. With several
        publishers connecting to several nodes at once right after the start, one node's
        publisher once got no PUBACK at all (bench/cluster_ingest.py stalled); connecting to
        each node in turn first avoids that race.
        """
        node = self.node(name)
        try:
            with socket.create_connection((node.host, node.mqtt_port), timeout=timeout) as raw:
                sock = self.mqtt_tls.wrap_socket(raw, server_hostname=node.host) if self.mqtt_tls else raw
                sock.settimeout(timeout)
                sock.sendall(mqtt_codec.connect(f"vigie-warmup-{name}", keepalive=30))
                buf = bytearray()
                while (found := mqtt_codec.next_frame(buf, 0)) is None:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return False
                    buf += chunk
                start, end = found
                ok = mqtt_codec.parse_connack(bytes(buf[start:end]))[1] == 0
                sock.sendall(mqtt_codec.disconnect())
                return ok
        except OSError:
            return False

    def stop(self) -> None:
        for name in list(self.processes):
            proc = self.processes.pop(name)
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def start_nats_cluster(
    workdir: Path,
    size: int = 3,
    *,
    users: tuple[NatsUser, ...] = (),
    tls: NatsTls | None = None,
    mqtt_tls: ssl.SSLContext | None = None,
    timeout: float = 60.0,
) -> NatsCluster:
    """Start ``size`` NATS servers clustered on loopback, with JetStream and MQTT; return once healthy.

    With ``tls``, ``mqtt_tls`` is the client side of the MQTT warm-up connection to each node
    (the device CA and one enrolled device's certificate): NATS sets up an account's MQTT
    streams on its first accepted MQTT connection.

    Raises:
        VigieError: nats-server is not installed (says what to install), or a node did not come up.
    """
    binary = find_nats_server()
    if binary is None:
        raise VigieError("nats-server not found: install it (`sudo apt-get install nats-server`)")
    if tls is not None and mqtt_tls is None:
        raise VigieError("start_nats_cluster: with tls, pass mqtt_tls (an enrolled device's certificate)")
    cluster = NatsCluster(
        plan_cluster(workdir, size, users=users, tls=tls), workdir, binary, mqtt_tls=mqtt_tls
    )
    try:
        for node in cluster.config.nodes:
            cluster.start_node(node.server_name)
        cluster.wait_healthy(timeout)
        for node in cluster.config.nodes:
            if not cluster.mqtt_ready(node.server_name):
                raise VigieError(
                    f"nats-server {node.server_name}'s MQTT port {node.mqtt_port} did not accept a "
                    f"connection; see {cluster.log_path(node.server_name)}"
                )
    except BaseException:
        cluster.stop()
        raise
    return cluster
