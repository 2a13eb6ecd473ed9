"""Access control, k-anonymity, the audit chain and the GDPR records, on the real app."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hub.api.main import create_app
from hub.audit import verify_chain
from hub.auth import ROLES, SCOPES, hash_password, issue_token
from hub.config import HubSettings
from hub.storage import SQLiteStore
from tests.test_wire import event

PASSWORD = "correct horse battery staple"
PURPOSE = {"X-Purpose": "authorisation matrix test"}

#: (method, path, scope or None for "any logged-in user" / "public") of every route.
ROUTES: list[tuple[str, str, str | None]] = [
    ("GET", "/v1/events", "events:read"),
    ("GET", "/v1/rollups", "events:read"),
    ("GET", "/v1/devices", "fleet:read"),
    ("GET", "/v1/quarantine", "fleet:read"),
    ("GET", "/metrics", "fleet:read"),
    ("GET", "/v1/campaigns", "fleet:read"),
    ("GET", "/v1/device-tags", "fleet:read"),
    ("GET", "/v1/cube", "analytics:read"),
    ("GET", "/v1/anomalies", "analytics:read"),
    ("GET", "/v1/forecast", "analytics:read"),
    ("GET", "/v1/zones", "analytics:read"),
    ("GET", "/v1/map/settings", "analytics:read"),
    ("GET", "/v1/map/districts", "analytics:read"),
    ("GET", "/v1/exports/cube.csv", "analytics:read"),
    ("GET", "/v1/exports/cube.geojson", "analytics:read"),
    ("GET", "/v1/exports/cube.parquet", "analytics:read"),
    ("GET", "/v1/exports/ngsi-ld", "analytics:read"),
    ("GET", "/v1/audit", "audit:read"),
    ("GET", "/v1/gdpr/records", "gdpr:read"),
    ("GET", "/v1/gdpr/dpia", "gdpr:read"),
    ("GET", "/v1/gdpr/retention", "gdpr:read"),
    ("GET", "/v1/users", "users:write"),
    ("GET", "/v1/auth/me", None),
]

#: Writes: (method, path template, a concrete path, scope). Sent without a body, an allowed caller
#: gets past authorisation to validation (422) or lookup (404); the others get 403.
WRITES: list[tuple[str, str, str, str]] = [
    ("POST", "/v1/campaigns", "/v1/campaigns", "fleet:write"),
    ("POST", "/v1/campaigns/{campaign_id}/{action}", "/v1/campaigns/c-none/pause", "fleet:write"),
    ("PUT", "/v1/devices/{site}/{device}/tags", "/v1/devices/s/d/tags", "fleet:write"),
]


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    app = create_app(HubSettings(db=str(tmp_path / "hub.sqlite"), ingest=False, rate=1000))
    with TestClient(app) as client:
        store = client.app.state.store  # type: ignore[attr-defined]
        tokens = {}
        for role in ROLES:
            store.add_user(f"u-{role}", hash_password(PASSWORD), role, time.time())
            tokens[role] = issue_token(store, f"u-{role}", ttl_s=600)[0]
        store.add_events([event(zone=f"z{i}") for i in range(3)], 1.0)
        yield client, tokens


def _call(client: TestClient, method: str, path: str, token: str | None) -> int:
    headers = dict(PURPOSE)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return client.request(method, path, headers=headers).status_code


def test_every_route_is_in_the_matrix(app_client: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = app_client
    spec = client.get("/openapi.json").json()
    served = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    public = {
        ("GET", "/v1/campaigns/{campaign_id}"),  # same router and scope as /v1/campaigns
        ("GET", "/healthz"),
        ("POST", "/v1/enrol"),
        ("POST", "/v1/renew"),  # its credential: the current certificate and its key
        ("POST", "/v1/auth/token"),
        ("POST", "/v1/auth/logout"),
        ("GET", "/v1/events/stream"),
    }
    assert served - public == {(m, p) for m, p, _ in ROUTES} | {(m, p) for m, p, _, _ in WRITES}


@pytest.mark.parametrize("role", sorted(ROLES))
def test_authorisation_matrix(app_client: tuple[TestClient, dict[str, str]], role: str) -> None:
    client, tokens = app_client
    for method, path, scope in ROUTES:
        status = _call(client, method, path, tokens[role])
        allowed = scope is None or scope in ROLES[role]
        assert (status == 200) if allowed else (status == 403), (role, path, status)
        assert _call(client, method, path, None) == 401, path  # nobody without a token
    for method, _, path, scope in WRITES:
        status = _call(client, method, path, tokens[role])
        assert (status in (404, 422)) if scope in ROLES[role] else (status == 403), (role, path, status)
        assert _call(client, method, path, None) == 401, path


def test_login_expiry_revocation_tampering_and_disabling(
    app_client: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = app_client
    store = client.app.state.store  # type: ignore[attr-defined]
    wrong = client.post("/v1/auth/token", data={"username": "u-analyst", "password": "not the password"})
    assert wrong.status_code == 401
    nobody = client.post("/v1/auth/token", data={"username": "ghost", "password": PASSWORD})
    assert nobody.status_code == 401
    assert nobody.json()["detail"] == wrong.json()["detail"]  # no user enumeration
    login = client.post("/v1/auth/token", data={"username": "u-analyst", "password": PASSWORD}).json()
    assert login["role"] == "analyst"
    assert login["scopes"] == sorted(ROLES["analyst"])
    token = login["access_token"]
    assert _call(client, "GET", "/v1/events", token) == 200
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert _call(client, "GET", "/v1/events", tampered) == 401
    detail = client.get("/v1/events", headers={"Authorization": f"Bearer {tampered}"}).json()["detail"]
    assert "log in again (POST /v1/auth/token)" in detail  # the fix, not a bare "invalid token"
    expired, _ = issue_token(store, "u-analyst", ttl_s=0.01)
    time.sleep(0.05)
    r = client.get("/v1/events", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401
    assert "expired" in r.json()["detail"]
    assert client.post("/v1/auth/logout", headers={"Authorization": f"Bearer {token}"}).status_code == 204
    r = client.get("/v1/events", headers={"Authorization": f"Bearer {token}"})
    assert r.json()["detail"] == "token revoked"
    store.update_user("u-operator", disabled_at=time.time())
    assert _call(client, "GET", "/v1/devices", tokens["operator"]) == 401


def test_purpose_is_required_on_sensitive_routes(app_client: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = app_client
    auth = {"Authorization": f"Bearer {tokens['analyst']}"}
    r = client.get("/v1/cube", headers=auth)
    assert r.status_code == 400
    assert "X-Purpose" in r.json()["detail"]
    assert client.get("/v1/cube", headers=auth, params={"purpose": "monthly report"}).status_code == 200
    assert client.get("/v1/events", headers=auth).status_code == 200  # anonymised events: no purpose needed


def test_rate_limit_per_token(tmp_path: Path) -> None:
    app = create_app(HubSettings(db=str(tmp_path / "hub.sqlite"), ingest=False, rate=2))
    with TestClient(app) as client:
        store = client.app.state.store  # type: ignore[attr-defined]
        store.add_user("a", hash_password(PASSWORD), "analyst", time.time())
        store.add_user("b", hash_password(PASSWORD), "analyst", time.time())
        a, b = issue_token(store, "a", ttl_s=60)[0], issue_token(store, "b", ttl_s=60)[0]
        codes = [_call(client, "GET", "/v1/events", a) for _ in range(12)]
        assert codes[:8] == [200] * 8  # burst of 4 × rate
        assert 429 in codes
        r = client.get("/v1/events", headers={"Authorization": f"Bearer {a}"})
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert _call(client, "GET", "/v1/events", b) == 200  # other tokens are unaffected


# -- k-anonymity: tests/test_disclosure_attack.py (an LP attacker over every route) -----------------


# -- audit ----------------------------------------------------------------------------------------------
def test_audit_chain_detects_modification_and_deletion(app_client: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = app_client
    for role in ("analyst", "dpo", "operator"):
        for path in ("/v1/cube", "/v1/events", "/v1/devices"):
            _call(client, "GET", path, tokens[role])
    dpo = {"Authorization": f"Bearer {tokens['dpo']}", "X-Purpose": "quarterly access review"}
    entries = client.get("/v1/audit", headers=dpo, params={"username": "u-analyst"}).json()["data"]
    assert {e["path"] for e in entries} >= {"/v1/cube", "/v1/events", "/v1/devices"}
    cube = next(e for e in entries if e["path"] == "/v1/cube")
    assert cube["purpose"] == PURPOSE["X-Purpose"]
    assert cube["role"] == "analyst"
    assert next(e for e in entries if e["path"] == "/v1/devices")["status"] == 403  # refusals are logged too
    store = client.app.state.store  # type: ignore[attr-defined]
    report = verify_chain(store)
    assert report.ok
    assert report.entries >= 10
    db = Path(client.app.state.settings.db)  # type: ignore[attr-defined]
    raw = sqlite3.connect(db)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("UPDATE audit SET status = 200 WHERE seq = 3")
    # Someone with file access drops the guard and edits an entry: the chain shows it.
    raw.execute("DROP TRIGGER audit_no_update")
    raw.execute("UPDATE audit SET purpose = 'nothing to see' WHERE seq = 4")
    raw.commit()
    report = verify_chain(store)
    assert not report.ok
    assert report.broken_at == 4
    assert "modified" in report.reason
    raw.execute("UPDATE audit SET purpose = (SELECT purpose FROM audit WHERE seq = 5) WHERE seq = 4")
    raw.commit()
    # Deleting an entry from the middle breaks the next link.
    raw.execute("DROP TRIGGER audit_no_delete")
    raw.execute("DELETE FROM audit WHERE seq = 6")
    raw.commit()
    report = verify_chain(store)
    assert not report.ok
    assert report.broken_at in (4, 7)


def test_audit_verify_cli_and_head(tmp_path: Path) -> None:
    import subprocess

    from hub.audit import chain_hash
    from tests.conftest import cli

    db = tmp_path / "hub.sqlite"
    store = SQLiteStore(db)
    heads = [
        store.append_audit(
            {
                "ts": float(i),
                "username": "x",
                "role": "dpo",
                "method": "GET",
                "path": "/v1/audit",
                "params": {},
                "purpose": "p",
                "status": 200,
            },
            chain_hash,
        )
        for i in range(5)
    ]
    store.close()
    ok = subprocess.run(cli("hub", "audit", "verify", "--db", str(db)), capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout
    assert f"ok: 5 entries, head 5:{heads[-1][1]}" in ok.stdout
    raw = sqlite3.connect(db)
    raw.execute("DROP TRIGGER audit_no_delete")
    raw.execute("DELETE FROM audit WHERE seq = 5")  # the newest entry: a shorter but valid chain
    raw.commit()
    bad = subprocess.run(
        cli("hub", "audit", "verify", "--db", str(db), "--head", f"5:{heads[-1][1]}"),
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    assert "entries were removed" in bad.stdout


# -- GDPR -------------------------------------------------------------------------------------------------
def test_gdpr_records_follow_the_live_configuration(
    app_client: tuple[TestClient, dict[str, str]], tmp_path: Path
) -> None:
    client, tokens = app_client
    store = client.app.state.store  # type: ignore[attr-defined]
    store.record_import("hospital", "b" * 64, "h.csv", {}, [], 0)
    dpo = {"Authorization": f"Bearer {tokens['dpo']}", "X-Purpose": "art. 30 record for the CNIL"}
    record = client.get("/v1/gdpr/records", headers=dpo).text
    assert "Record of processing activities (GDPR art. 30)" in record
    assert "**hospital**" in record
    assert "**camera**" in record  # a device has sent events
    assert "raw events 90 days" in record
    assert "1 analyst" in record
    assert "k = 5" in record
    dpia = client.get("/v1/gdpr/dpia", headers=dpo).text
    assert "(c) Risks" in dpia
    assert "| Anomalies reveal no hidden count |" in dpia  # the guarantees table of docs/privacy.md
    assert client.get("/v1/gdpr/retention", headers=dpo).json()["policy"]["events_days"] == 90

    import subprocess

    from tests.conftest import cli

    db = client.app.state.settings.db  # type: ignore[attr-defined]
    out = tmp_path / "gdpr"
    done = subprocess.run(
        cli("hub", "gdpr", "--db", db, "--out", str(out), "--controller", "Ville de Marseille"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (out / "record-of-processing.pdf").read_bytes().startswith(b"%PDF")
    assert "Ville de Marseille" in (out / "record-of-processing.md").read_text()
    assert (out / "dpia-draft.pdf").stat().st_size > 2000


def test_scopes_are_documented() -> None:
    assert set().union(*ROLES.values()) == set(SCOPES)
