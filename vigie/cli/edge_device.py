"""``vigie edge enrol|update|ota-listen``: the device's identity and its model updates."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vigie.cli.options import FMT, add_broker_options, broker_config

__all__ = ["register"]

_OTA_DIR = Path("/var/lib/vigie/ota")  # the device's OTA folder, as the Ansible role lays it out


def register(edge_sub: Any) -> None:
    """Add ``enrol``, ``update`` and ``ota-listen`` under ``vigie edge``."""
    _register_enrol(edge_sub)
    _register_update(edge_sub)
    _register_listen(edge_sub)


def _register_enrol(edge_sub: Any) -> None:
    enrol = edge_sub.add_parser(
        "enrol",
        formatter_class=FMT,
        help="Enrol this device: make a key, send a CSR with a token, install the certificate.",
        description="The private key is made here and never leaves the device. Does nothing when a "
        "certificate is already installed (revoke on the hub and delete the PKI folder to start again).",
        epilog="Example:\n  vigie edge enrol --hub https://hub.city.example --site vieux-port --device cam-3 "
        "--token-file /run/vigie-token\n",
    )
    enrol.add_argument("--hub", required=True, help="Hub base URL, e.g. https://hub.city.example.")
    enrol.add_argument("--site", required=True, help="Site slug.")
    enrol.add_argument("--device", required=True, help="This device's slug.")
    enrol.add_argument(
        "--token-file", type=Path, default=None, help="File holding the token (or env VIGIE_ENROL_TOKEN)."
    )
    enrol.add_argument("--pki-dir", type=Path, default=Path("/etc/vigie/pki"), help="Default /etc/vigie/pki.")
    enrol.add_argument("--ota-dir", type=Path, default=_OTA_DIR, help=f"Default {_OTA_DIR}.")
    enrol.add_argument("--hub-ca", type=Path, default=None, help="CA bundle to trust the hub's HTTPS with.")
    enrol.set_defaults(handler=_enrol)


def _register_update(edge_sub: Any) -> None:
    up = edge_sub.add_parser(
        "update",
        formatter_class=FMT,
        help="Install a model update: TUF-verified, A/B slots, smoke test, rollback.",
        description="Download TARGET through TUF from the hub's repository, unpack it into the inactive "
        "slot, smoke-test it (loads, runs within the bundle's latency budget, sane outputs), switch "
        "atomically, check again, and roll back by itself if that fails. --recover finishes or undoes an "
        "update interrupted by a power cut.",
        epilog="Examples:\n"
        "  vigie edge update --repo https://hub.city.example/ota --target models/ssd-coco-1.1.0.tar\n"
        "  vigie edge update --recover\n",
    )
    up.add_argument("--repo", default=None, help="Base URL of the hub's TUF repository (…/ota).")
    up.add_argument("--target", default=None, help="Target name, e.g. models/ssd-coco-1.1.0.tar.")
    up.add_argument("--ota-dir", type=Path, default=_OTA_DIR, help=f"Default {_OTA_DIR}.")
    up.add_argument(
        "--initial", type=Path, default=None, help="Install this trusted bundle as the first model."
    )
    up.add_argument("--recover", action="store_true", help="Finish or undo an interrupted update.")
    up.add_argument("--max-kbps", type=float, default=None, help="Bandwidth cap for the download (kB/s).")
    up.add_argument("--pause-at", default=None, help=argparse.SUPPRESS)  # tests: stop at a step
    up.set_defaults(handler=_update)


def _register_listen(edge_sub: Any) -> None:
    listen = edge_sub.add_parser(
        "ota-listen",
        formatter_class=FMT,
        help="Take OTA campaign commands on a connection of its own (only where no agent takes them).",
        description="Subscribes to vigie/v1/SITE/DEVICE/ota; installs (or rolls back) as the hub's campaign "
        "asks, through `vigie edge update`'s updater; reports each step on .../ota-state; tells the agent "
        "to reload its model after a switch (SIGHUP to the pid in --agent-pid-file).\n\n"
        "The agent takes these commands itself (`vigie edge run --ota-dir`, with --ota-repo or an "
        "enrolled hub). Do NOT run this beside an agent under the same identity: the broker binds the "
        "client id to the device's username or certificate, so both get the same id and the broker "
        "disconnects them in turn. Use it only on a box whose agent is not running or runs without "
        "--ota-dir.",
    )
    listen.add_argument("--site", required=True)
    listen.add_argument("--device", required=True)
    listen.add_argument("--repo", required=True, help="Base URL of the hub's TUF repository (…/ota).")
    listen.add_argument("--ota-dir", type=Path, default=_OTA_DIR)
    listen.add_argument(
        "--crash-watch",
        type=float,
        default=20.0,
        help="Seconds the agent must survive a switch before the update counts (default 20).",
    )
    listen.add_argument(
        "--agent-pid-file", type=Path, default=None, help="The agent's pid file (`edge run --pid-file`)."
    )
    add_broker_options(listen)
    listen.set_defaults(handler=_listen)


# -- handlers ---------------------------------------------------------------------------------
def _enrol(args: argparse.Namespace) -> int:
    from edge.enrol import enrol
    from edge.settings import EdgeSettings
    from vigie.exceptions import ConfigError

    secret = EdgeSettings.load().enrol_token
    token = secret.get_secret_value() if secret else ""
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--token-file {args.token_file}: {exc.strerror}") from None
    if not token:
        raise ConfigError("no enrolment token: give --token-file FILE or set VIGIE_ENROL_TOKEN")
    outcome = enrol(args.hub, args.site, args.device, token, args.pki_dir, args.ota_dir, cafile=args.hub_ca)
    what = "enrolled" if outcome.state == "enrolled" else "already enrolled"
    print(
        f"{what}: {args.site}/{args.device}, certificate {outcome.certificate}",
        f"(sha256 {outcome.fingerprint[:16]}…)",
    )
    return 0


def _update(args: argparse.Namespace) -> int:
    from edge.ota.updater import ModelUpdater, UpdateError

    cap = args.max_kbps * 1000 if args.max_kbps else None
    updater = ModelUpdater(args.ota_dir, args.repo or "", pause_at=args.pause_at, max_bytes_per_s=cap)
    if args.recover:
        print(updater.recover())
        return 0
    if args.initial is not None:
        print(f"installed {updater.install_initial(args.initial).ref}")
        return 0
    if not args.repo or not args.target:
        print("vigie: error: give --repo and --target (or --recover, or --initial)", file=sys.stderr)
        return 2
    try:
        manifest = updater.update(args.target)
    except UpdateError as exc:
        print(f"vigie: update refused: {exc}", file=sys.stderr)
        return 1
    print(f"updated to {manifest.ref}")
    return 0


def _listen(args: argparse.Namespace) -> int:
    import signal
    import threading

    from edge.ota.listener import OtaListener

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    listener = OtaListener(
        broker_config(args),
        args.site,
        args.device,
        args.ota_dir,
        args.repo,
        agent_pid_file=args.agent_pid_file,
        crash_watch_s=args.crash_watch,
    )
    listener.run(stop)
    return 0
