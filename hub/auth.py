"""Who may call what: users with roles, roles with scopes, bearer tokens with expiry and revocation.

* Passwords are hashed with argon2id (memory-hard; ``argon2-cffi``'s defaults: 64 MiB, 3 passes).
* ``POST /v1/auth/token`` (OAuth2 password flow) trades a username and password for an
  opaque bearer token; the store keeps only its SHA-256. Tokens expire (8 h by default,
  ``vigie hub user token`` makes longer ones for scripts) and can be revoked.
* Each route asks for one scope; a role is a set of scopes (:data:`ROLES`).
* Each token has a rate limit (a token bucket in the shared store, for every process; ``VIGIE_HUB_RATE``).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer

from hub.ratelimit import RateLimiter
from hub.storage import Store
from hub.storage.base import ApiTokenGrant

__all__ = [
    "HASH_SLOTS",
    "ROLES",
    "SCOPES",
    "HashSlots",
    "HashersBusyError",
    "Principal",
    "authenticate",
    "grant_problem",
    "hash_password",
    "issue_token",
    "recheck",
    "require",
    "token_hash",
    "verify_password",
]

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


class HashSlots:
    """A cap on argon2 hashes running at once (each takes 64 MiB): parallel logins queue, then 503.

    Counts how many are in use and the most ever in use at once (the tests read ``peak``).
    """

    def __init__(self, slots: int, wait_s: float = 10.0) -> None:
        self.slots, self.wait_s = slots, wait_s
        self._sem = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self.in_use = self.peak = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        if not self._sem.acquire(timeout=self.wait_s):
            raise HashersBusyError(f"{self.slots} password hashes already running; retry in a few seconds")
        with self._lock:
            self.in_use += 1
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            with self._lock:
                self.in_use -= 1
            self._sem.release()


class HashersBusyError(Exception):
    """Every hash slot stayed taken for ``HashSlots.wait_s``: the login route answers 503."""


#: Two hashes at once by default (128 MiB at most; a small hub box has 2 to 4 cores).
HASH_SLOTS = HashSlots(max(1, min(2, os.cpu_count() or 1)))

TOKEN_PREFIX = "vgk_"  # noqa: S105 (a prefix that makes leaked tokens easy to grep for, not a secret)
_hasher = PasswordHasher()
_DUMMY = _hasher.hash("timing-equaliser")


def hash_password(password: str) -> str:
    if len(password) < 12:
        raise ValueError("password: at least 12 characters")
    with HASH_SLOTS.slot():
        return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Constant work whether or not the user exists (no user enumeration by timing).

    Raises :class:`HashersBusyError` when no hash slot frees up in time (see :data:`HASH_SLOTS`).
    """
    with HASH_SLOTS.slot():
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


def grant_problem(row: ApiTokenGrant | None, now: float) -> str | None:
    """Why a stored token no longer authenticates anyone (None: it still does). Pure."""
    if row is None:
        return "invalid token (not one this hub issued, or mistyped): log in again (POST /v1/auth/token)"
    if row["revoked_at"] is not None:
        return "token revoked"
    if row["expires_at"] <= now:
        return "token expired: log in again"
    if row["disabled_at"] is not None:
        return "account disabled"
    return None


def recheck(store: Store, principal: Principal, scope: str, now: float | None = None) -> str | None:
    """Long responses ask this every few seconds (issue 17): why the caller may no longer be served.

    A token is checked once per request; a stream open for an hour would otherwise outlive a logout,
    a revocation, its own expiry, the account's disablement or a role that lost ``scope``.
    """
    if not principal.token_hash:  # authentication is off (closed test benches)
        return None
    row = store.get_api_token(principal.token_hash)
    problem = grant_problem(row, time.time() if now is None else now)
    if problem is None and row is not None and scope not in ROLES.get(row["role"], frozenset()):
        problem = f"role {row['role']!r} lacks scope {scope!r}"
    return problem


def authenticate(request: Request, token: Annotated[str | None, Depends(oauth2)]) -> Principal:
    """The caller behind the bearer token (401 with the reason otherwise); applies the rate limit."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    if not request.app.state.settings.auth:  # the one settings object (hub.api.main.create_app)
        principal = Principal("anonymous", "admin", ROLES["admin"], "")
        request.state.principal = principal
        return principal
    if not token:
        raise _unauthorised("not authenticated: send `Authorization: Bearer <token>` (POST /v1/auth/token)")
    store: Store = request.app.state.store
    digest = token_hash(token)
    row = store.get_api_token(digest)
    now = time.time()
    problem = grant_problem(row, now)
    if problem is not None or row is None:
        raise _unauthorised(problem or "invalid token")
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
