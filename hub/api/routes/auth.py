"""Logging in and out (OAuth2 password flow, bearer tokens)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from hub.api.deps import SettingsDep, StoreDep
from hub.auth import ROLES, Principal, authenticate, issue_token, verify_password

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
    responses={401: {"description": "Wrong username or password, or account disabled"}},
)
def login(
    settings: SettingsDep, store: StoreDep, form: Annotated[OAuth2PasswordRequestForm, Depends()]
) -> TokenOut:
    """OAuth2 password flow (form fields `username`, `password`). Tokens last `VIGIE_HUB_TOKEN_TTL` (8 h)."""
    user = store.get_user(form.username)
    ok = verify_password(user["password_hash"] if user else None, form.password)
    if not ok or user is None or user["disabled_at"] is not None:
        time.sleep(0.2)  # slows guessing a little; the rate of logins is also logged (audit)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "wrong username or password", headers={"WWW-Authenticate": "Bearer"}
        )
    ttl = settings.token_ttl_s
    token, _ = issue_token(store, user["username"], ttl_s=ttl)
    return TokenOut(
        access_token=token, expires_in=int(ttl), role=user["role"], scopes=sorted(ROLES[user["role"]])
    )


@router.get("/me", response_model=Me, summary="Who am I")
def me(principal: Annotated[Principal, Depends(authenticate)]) -> Me:
    return Me(username=principal.username, role=principal.role, scopes=sorted(principal.scopes))


@router.post("/logout", status_code=204, summary="Revoke the token of this request")
def logout(store: StoreDep, principal: Annotated[Principal, Depends(authenticate)]) -> None:
    store.revoke_api_tokens(token_hash=principal.token_hash, now=time.time())
