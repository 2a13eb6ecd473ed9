"""Who may call what: users with roles, roles with scopes, bearer tokens with expiry and revocation.

* Passwords are hashed with argon2id (memory-hard; ``argon2-cffi``'s defaults: 64 MiB, 3 passes).
* ``POST /v1/auth/token`` (OAuth2 password flow) trades a username and password for an
  opaque bearer token; the store keeps only its SHA-256. Tokens expire (8 h by default,
  ``vigie hub user token`` makes longer ones for scripts) and can be revoked.
* Each route asks for one scope; a role is a set of scopes (:data:`ROLES`).
* Each token has a rate limit (a token bucket per process; ``VIGIE_HUB_RATE``).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer

from hub.ratelimit import RateLimiter
from hub.storage import Store

__all__ = ["ROLES", "SCOPES", "Principal", "issue_token", "require", "verify_password"]

#: Every scope a route can ask for, and what it covers.
SCOPES: dict[str, str] = {
    "events:read": "anonymised events and roll-ups",
    "analytics:read": "the fused cube, anomalies, forecasts, zones, exports",
    "fleet:read": "devices, their health and quarantined messages",
    "fleet:write": "OTA campaigns and fleet operations",
    "enrol:write": "enrolment tokens and revocation",
    "audit:read": "the audit log",
    "gdpr:read": "the record of processing, the DPIA draft, the retention report",
    "users:write": "users and tokens",
}

#: Roles and their scopes (docs/api.md has the full matrix).
ROLES: dict[str, frozenset[str]] = {
    "analyst": frozenset({"events:read", "analytics:read"}),
    "operator": frozenset({"fleet:read", "fleet:write"}),  # device health, not counts (docs/privacy.md)
    "technician": frozenset({"fleet:read", "enrol:write"}),
    "dpo": frozenset({"audit:read", "gdpr:read", "analytics:read"}),
    "admin": frozenset(SCOPES),
}

TOKEN_PREFIX = "vgk_"  # noqa: S105 (a prefix that makes leaked tokens easy to grep for, not a secret)
_hasher = PasswordHasher()
_DUMMY = _hasher.hash("timing-equaliser")


def hash_password(password: str) -> str:
    if len(password) < 12:
        raise ValueError("password: at least 12 characters")
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Constant work whether or not the user exists (no user enumeration by timing)."""
    try:
        return _hasher.verify(stored or _DUMMY, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(store: Store, username: str, *, ttl_s: float, label: str = "login") -> tuple[str, float]:
    """A new bearer token for ``username``; returns (token, expires_at). Only its hash is stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = time.time()
    store.add_api_token(token_hash(token), username, label, now, now + ttl_s)
    return token, now + ttl_s


@dataclass(frozen=True)
class Principal:
    """The caller, once authenticated."""

    username: str
    role: str
    scopes: frozenset[str]
    token_hash: str


oauth2 = OAuth2PasswordBearer(tokenUrl="/v1/auth/token", auto_error=False, scopes=SCOPES)


def _unauthorised(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


def authenticate(request: Request, token: Annotated[str | None, Depends(oauth2)]) -> Principal:
    """The caller behind the bearer token (401 with the reason otherwise); applies the rate limit."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    if not getattr(request.app.state, "auth_enabled", True):
        principal = Principal("anonymous", "admin", ROLES["admin"], "")
        request.state.principal = principal
        return principal
    if not token:
        raise _unauthorised("not authenticated: send `Authorization: Bearer <token>` (POST /v1/auth/token)")
    store: Store = request.app.state.store
    digest = token_hash(token)
    row = store.get_api_token(digest)
    now = time.time()
    if row is None:
        raise _unauthorised("invalid token")
    if row["revoked_at"] is not None:
        raise _unauthorised("token revoked")
    if row["expires_at"] <= now:
        raise _unauthorised("token expired: log in again")
    if row["disabled_at"] is not None:
        raise _unauthorised("account disabled")
    limiter: RateLimiter = request.app.state.rate_limiter
    allowed, wait = limiter.allow(digest)
    if not allowed:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"rate limit of {limiter.rate:g} requests/s for this token; retry in {wait:.1f} s",
            headers={"Retry-After": str(max(1, round(wait)))},
        )
    principal = Principal(row["username"], row["role"], ROLES.get(row["role"], frozenset()), digest)
    request.state.principal = principal
    return principal


def require(scope: str) -> Any:
    """A dependency: the caller must hold ``scope`` (403 naming it otherwise)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if scope not in principal.scopes:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"role {principal.role!r} lacks scope {scope!r} ({SCOPES[scope]})"
            )
        return principal

    return Depends(check)
