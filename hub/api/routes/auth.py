"""Logging in and out (OAuth2 password flow, bearer tokens)."""

from __future__ import annotations

import math
import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from hub.api.deps import SettingsDep, StoreDep
from hub.audit import chain_hash
from hub.auth import ROLES, HashersBusyError, Principal, authenticate, issue_token, verify_password
from hub.login_guard import LoginGuard
from hub.storage import Store

__all__ = ["Me", "TokenOut", "login", "logout", "me", "router"]

router = APIRouter(prefix="/v1/auth", tags=["auth"])


class TokenOut(BaseModel):
    access_token: str = Field(description="Bearer token: `Authorization: Bearer <token>`.")
    token_type: str = "bearer"  # noqa: S105 (the OAuth2 token type, not a secret)
    expires_in: int = Field(description="Seconds until it expires.")
    role: str
    scopes: list[str]


class Me(BaseModel):
    username: str
    role: str
    scopes: list[str]


@router.post(
    "/token",
    response_model=TokenOut,
    summary="Log in: username and password for a bearer token",
    responses={
        401: {"description": "Wrong username or password, or account disabled"},
        429: {"description": "Too many attempts for this account or from this address (see Retry-After)"},
        503: {"description": "Too many password hashes running at once (see Retry-After)"},
    },
)
def login(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> TokenOut:
    """OAuth2 password flow (form fields `username`, `password`). Tokens last `VIGIE_HUB_TOKEN_TTL` (8 h).

    Throttled per account and per client address (429 with Retry-After; hub/login_guard.py).
    """
    guard: LoginGuard = request.app.state.login_guard
    client = request.client.host if request.client else "unknown"
    now = time.time()
    if (refused := guard.wait_s(store, form.username, client, now)) is not None:
        wait, why = refused
        raise _too_many(f"{why}: retry in {wait:.0f} s", wait)
    user = store.get_user(form.username)
    try:
        ok = verify_password(user["password_hash"] if user else None, form.password)
    except HashersBusyError as exc:
        raise HTTPException(503, f"hub busy: {exc}", headers={"Retry-After": "5"}) from None
    if not ok or user is None or user["disabled_at"] is not None:
        if (failures := guard.failed(store, form.username, now)) is not None:
            _audit_lockout(store, form.username, client, failures, guard.policy.lockout_s, now)
        time.sleep(0.2)  # slows guessing a little more; every attempt is also in the audit log
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "wrong username or password", headers={"WWW-Authenticate": "Bearer"}
        )
    guard.succeeded(store, form.username, now)
    ttl = settings.token_ttl_s
    token, _ = issue_token(store, user["username"], ttl_s=ttl)
    return TokenOut(
        access_token=token, expires_in=int(ttl), role=user["role"], scopes=sorted(ROLES[user["role"]])
    )


def _too_many(detail: str, wait_s: float) -> HTTPException:
    return HTTPException(429, detail, headers={"Retry-After": str(max(1, math.ceil(wait_s)))})


def _audit_lockout(
    store: Store, username: str, client: str, failures: int, lockout_s: float, now: float
) -> None:
    """One audit entry per lockout, in the same hash chain as every request (hub/audit.py)."""
    entry = {
        "ts": round(now, 3),
        "username": username,
        "role": None,
        "method": "LOCKOUT",
        "path": "/v1/auth/token",
        "params": {"client": client, "failures": failures, "locked_s": lockout_s},
        "purpose": "login throttling: repeated wrong passwords",
        "status": 429,
    }
    store.append_audit(entry, chain_hash)


@router.get("/me", response_model=Me, summary="Who am I")
def me(principal: Annotated[Principal, Depends(authenticate)]) -> Me:
    return Me(username=principal.username, role=principal.role, scopes=sorted(principal.scopes))


@router.post("/logout", status_code=204, summary="Revoke the token of this request")
def logout(store: StoreDep, principal: Annotated[Principal, Depends(authenticate)]) -> None:
    store.revoke_api_tokens(token_hash=principal.token_hash, now=time.time())
