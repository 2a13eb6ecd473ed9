"""CLI for access and accountability: `vigie hub user …`, `vigie hub audit verify`, `vigie hub gdpr …`."""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from pathlib import Path
from typing import Any

from vigie.cli.options import FMT, LazyChoices, add_db, duration_arg, hub_settings
from vigie.exceptions import ConfigError

__all__ = ["register"]


def _roles() -> dict[str, Any]:
    try:  # an edge-only install (a Pi) has no hub modules: the CLI must still start
        from hub.auth import ROLES
    except ImportError:
        return {}
    return dict(ROLES)


def _describe_roles() -> str:
    """The roles and scopes, for ``vigie hub user --help`` (imports the hub only when shown)."""
    try:
        from hub.auth import SCOPES
    except ImportError:
        SCOPES = {}  # noqa: N806
    roles = "\n".join(
        f"  {r:<11} {', '.join(sorted(s)) if r != 'admin' else 'every scope'}" for r, s in _roles().items()
    )
    return roles + "\n\nScopes:\n" + "\n".join(f"  {s:<15} {d}" for s, d in SCOPES.items())


def register(hub_sub: Any) -> None:
    """Add ``user``, ``audit`` and ``gdpr`` under ``vigie hub``."""
    _register_user(hub_sub)
    _register_audit(hub_sub)
    _register_gdpr(hub_sub)


def _register_user(hub_sub: Any) -> None:
    user = hub_sub.add_parser(
        "user",
        formatter_class=FMT,
        help="Manage users and their API tokens.",
        description="Users log in to the API and the dashboard with a password (hashed with argon2id) and "
        "get a bearer token; scripts use a long-lived token made here.\n\nRoles and their scopes:\n",
        describe=_describe_roles,
        epilog="Examples:\n  vigie hub user add alice --role analyst          (asks for the password)\n"
        "  vigie hub user token alice --ttl 30d --label 'weekly report script'\n"
        "  vigie hub user disable bob\n",
    )  # fmt: skip
    user_sub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = user_sub.add_parser("add", help="Add a user.")
    add.add_argument("username")
    role = add.add_argument("--role", required=True)
    LazyChoices.attach(role, lambda: list(_roles()))
    add.add_argument("--password-file", type=Path, default=None, help="Read the password from a file.")
    add_db(add)
    add.set_defaults(handler=_user_add)
    lst = user_sub.add_parser("list", help="List users.")
    add_db(lst)
    lst.set_defaults(handler=_user_list)
    tok = user_sub.add_parser("token", help="Make an API token for a user (shown once).")
    tok.add_argument("username")
    tok.add_argument("--ttl", type=duration_arg, default="8h", help="Validity: 30m, 8h, 30d (default 8h).")
    tok.add_argument("--label", default="cli", help="What it is for (shown in `user list`).")
    add_db(tok)
    tok.set_defaults(handler=_user_token)
    for name, text in (
        ("disable", "Disable a user and revoke their tokens."),
        ("enable", "Enable a user again."),
        ("revoke-tokens", "Revoke every token of a user."),
        ("passwd", "Set a user's password."),
    ):
        p = user_sub.add_parser(name, help=text)
        p.add_argument("username")
        if name == "passwd":
            p.add_argument("--password-file", type=Path, default=None)
        add_db(p)
        p.set_defaults(handler=_user_change, action=name)  # fmt: skip


def _register_audit(hub_sub: Any) -> None:
    audit = hub_sub.add_parser(
        "audit",
        formatter_class=FMT,
        help="Verify the audit log's hash chain.",
        description="Walk the audit log and check every entry's hash and link: a modified entry, or an "
        "entry deleted from the middle, is reported with its number. Entries removed from the end leave a "
        "valid, shorter chain: give the head you noted (the hub logs it every 1,000 entries) with --head.",
        epilog="Example:\n  vigie hub audit verify --head 42000:3f5a…\n",
    )
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = audit_sub.add_parser("verify", help="Check the chain.")
    verify.add_argument("--head", default=None, help="SEQ:HASH the log must still contain.")
    add_db(verify)
    verify.set_defaults(handler=_audit_verify)


def _register_gdpr(hub_sub: Any) -> None:
    gdpr = hub_sub.add_parser(
        "gdpr",
        formatter_class=FMT,
        help="Write the GDPR records from the live configuration (Markdown and PDF).",
        description="The record of processing (art. 30), a DPIA draft (art. 35(7)) and the retention report, "
        "built from what is configured and stored now: sources, devices, models, retention, roles, k.",
        epilog="Example:\n"
        "  vigie hub gdpr --out gdpr/ --controller 'Ville de Marseille' --dpo dpo@marseille.fr\n",
    )
    gdpr.add_argument("--out", type=Path, default=Path("gdpr"), help="Folder (default ./gdpr).")
    gdpr.add_argument(
        "--controller", default=None, help="GDPR controller (default: env VIGIE_HUB_CONTROLLER)."
    )
    gdpr.add_argument("--dpo", default=None, help="DPO contact (default: env VIGIE_HUB_DPO).")
    gdpr.add_argument("--no-pdf", action="store_true", help="Markdown only.")
    add_db(gdpr)
    gdpr.set_defaults(handler=_gdpr)


def _password(args: argparse.Namespace) -> str:
    if getattr(args, "password_file", None) is not None:
        try:
            return str(args.password_file.read_text().strip())
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ConfigError(
                f"--password-file {args.password_file}: cannot be read ({reason}): check the path, "
                "or leave --password-file out to type the password"
            ) from None
    if not sys.stdin.isatty():
        return sys.stdin.readline().strip()
    first = getpass.getpass("password (12 characters or more): ")
    if getpass.getpass("again: ") != first:
        raise SystemExit("vigie: error: the passwords differ")
    return first


def _user_add(args: argparse.Namespace) -> int:
    from hub.auth import hash_password
    from hub.storage import open_store

    try:
        digest = hash_password(_password(args))
    except ValueError as exc:
        print(f"vigie: error: {exc}", file=sys.stderr)
        return 2
    store = open_store(hub_settings(args).db)
    if not store.add_user(args.username, digest, args.role, time.time()):
        print(f"vigie: error: user {args.username!r} exists; `vigie hub user passwd` changes a password",
              file=sys.stderr)  # fmt: skip
        return 2
    print(f"added {args.username} ({args.role})")
    return 0


def _user_list(args: argparse.Namespace) -> int:
    from hub.storage import open_store

    for u in open_store(hub_settings(args).db).list_users():
        state = "disabled" if u["disabled_at"] else "active"
        print(f"{u['username']:<20} {u['role']:<11} {state}")
    return 0


def _user_token(args: argparse.Namespace) -> int:
    from hub.auth import issue_token
    from hub.enrolment import parse_duration
    from hub.storage import open_store

    store = open_store(hub_settings(args).db)
    if store.get_user(args.username) is None:
        print(f"vigie: error: no user {args.username!r}", file=sys.stderr)
        return 2
    token, until = issue_token(store, args.username, ttl_s=parse_duration(args.ttl), label=args.label)
    print(token)
    print(
        f"valid until {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(until))}; shown once", file=sys.stderr
    )
    return 0


def _user_change(args: argparse.Namespace) -> int:
    from hub.auth import hash_password
    from hub.storage import open_store

    store = open_store(hub_settings(args).db)
    now = time.time()
    if args.action == "disable":
        ok = store.update_user(args.username, disabled_at=now)
        store.revoke_api_tokens(username=args.username, now=now)
    elif args.action == "enable":
        ok = store.update_user(args.username, disabled_at=None)
    elif args.action == "revoke-tokens":
        ok = store.get_user(args.username) is not None
        print(f"{store.revoke_api_tokens(username=args.username, now=now)} tokens revoked")
    else:
        ok = store.update_user(args.username, password_hash=hash_password(_password(args)))
    if not ok:
        print(f"vigie: error: no user {args.username!r}", file=sys.stderr)
        return 2
    print(f"{args.action}: {args.username}")
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    from hub.audit import verify_chain
    from hub.storage import open_store

    head = None
    if args.head:
        seq, _, digest = args.head.partition(":")
        head = (int(seq), digest)
    report = verify_chain(open_store(hub_settings(args).db), head=head)
    if report.ok:
        print(f"ok: {report.entries} entries, head {report.head_seq}:{report.head_hash}")
        return 0
    print(
        f"BROKEN at entry {report.broken_at}: {report.reason} ({report.entries} entries verified before it)"
    )
    return 1


def _gdpr(args: argparse.Namespace) -> int:
    from hub.gdpr import collect_facts, dpia_draft, record_of_processing, retention_report, to_pdf
    from hub.storage import open_store

    settings = hub_settings(args)  # the live retention policy and k
    store = open_store(settings.db)
    facts = collect_facts(
        store,
        settings.retention,
        settings.k,
        controller=settings.controller,
        dpo_contact=settings.dpo_contact,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    documents = {"record-of-processing": record_of_processing(facts), "dpia-draft": dpia_draft(facts),
                 "retention-report": retention_report(facts)}  # fmt: skip
    for name, text in documents.items():
        (args.out / f"{name}.md").write_text(text)
        if not args.no_pdf:
            to_pdf(text, args.out / f"{name}.pdf")
        print(f"wrote {args.out / name}.md" + ("" if args.no_pdf else " and .pdf"))
    return 0
