"""Login throttling (issue 17, finding 6): per account, per client address, and a cap on password hashes.

Each login attempt costs an argon2id hash (64 MiB, ~0.1 s of a core): unthrottled, a guesser tries
passwords as fast as the hub hashes them, and parallel attempts exhaust its memory. Three walls:

* **per client address**: a token bucket of attempts (``client_burst`` at once, then
  ``client_rate`` a second); beyond it, 429 with ``Retry-After`` before any hashing.
* **per account**: ``max_failures`` wrong passwords within ``window_s`` lock the account name for
  ``lockout_s`` (429 with ``Retry-After``, even for the right password; an audit entry says so).
  Names that do not exist lock the same way, so a lockout reveals nothing about who exists. The
  cost: someone who knows a username can keep its owner from logging in by password for a while;
  tokens already issued keep working, and an admin can issue a new one (``vigie hub user token``).
* **hashes at once**: :data:`HASH_SLOTS` (in ``hub/auth.py``) lets only a few argon2 hashes run at
  the same time in one process (memory is a per-process resource); a login that waits too long for
  one gets 503 with ``Retry-After``.

The first two are kept in the shared store (``hub/storage/throttle.py``), so N uvicorn workers or
N hub hosts on one database allow what one process would, not N times as much. The decisions are
pure functions of the state and an explicit clock (:func:`take_attempt`, :func:`add_failure`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hub.storage import ThrottleStore

__all__ = ["LoginGuard", "ThrottlePolicy", "account_key", "add_failure", "client_key", "take_attempt"]


@dataclass(frozen=True)
class ThrottlePolicy:
    """How many wrong passwords and attempts are allowed before the hub says 429."""

    max_failures: int = 5
    window_s: float = 15 * 60
    lockout_s: float = 15 * 60
    client_rate: float = 0.2  # attempts a second per address, sustained (12 a minute)
    client_burst: int = 10


def account_key(username: str) -> str:
    """Names compare without case; a name of a megabyte is remembered by its first 128 characters."""
    return "login-account:" + username.casefold()[:128]


def client_key(client: str) -> str:
    return "login-client:" + client[:64]


def take_attempt(
    state: dict[str, Any] | None, now: float, rate: float, burst: int
) -> tuple[dict[str, Any], float, float]:
    """One attempt from a token bucket: (new state, seconds to wait or 0 when allowed, expiry).

    The state expires when the bucket would be full again: forgetting it then changes nothing.
    """
    tokens = float(burst) if state is None else float(state["tokens"])
    last = now if state is None else float(state["last"])
    tokens = min(float(burst), tokens + max(0.0, now - last) * rate)
    wait = 0.0
    if tokens >= 1:
        tokens -= 1
    else:
        wait = (1 - tokens) / rate
    return {"tokens": tokens, "last": now}, wait, now + (burst - tokens) / rate


def add_failure(
    state: dict[str, Any] | None, now: float, policy: ThrottlePolicy
) -> tuple[dict[str, Any], float, int | None]:
    """Record a wrong password: (new state, expiry, the failure count when this one locks the account)."""
    failures = [t for t in (state or {}).get("failures", []) if t > now - policy.window_s] + [now]
    locked_until = float((state or {}).get("locked_until", 0.0))
    locks = None
    if len(failures) >= policy.max_failures:
        locks, locked_until, failures = len(failures), now + policy.lockout_s, []
    expires = max([locked_until, *(t + policy.window_s for t in failures)])
    return {"failures": failures, "locked_until": locked_until}, expires, locks


class LoginGuard:
    """Decides whether a login attempt may be tried, and records failures and successes in ``store``."""

    def __init__(self, policy: ThrottlePolicy | None = None) -> None:
        self.policy = policy or ThrottlePolicy()

    def wait_s(
        self, store: ThrottleStore, username: str, client: str, now: float
    ) -> tuple[float, str] | None:
        """(seconds to wait, why) when this attempt must be refused with 429; None to go on."""
        account = store.get_throttle(account_key(username), now)
        if account is not None and account["locked_until"] > now:
            return account["locked_until"] - now, f"account {username!r} is locked after repeated failures"
        p = self.policy
        waits: list[float] = []

        def change(state: dict[str, Any] | None) -> tuple[dict[str, Any], float]:
            new, wait, expires = take_attempt(state, now, p.client_rate, p.client_burst)
            waits.append(wait)
            return new, expires

        store.update_throttle(client_key(client), change, now)
        if waits[-1] > 0:
            return waits[-1], f"too many login attempts from {client}"
        return None

    def failed(self, store: ThrottleStore, username: str, now: float) -> int | None:
        """Record a wrong password; returns the failure count when this one locks the account."""
        locks: list[int | None] = []

        def change(state: dict[str, Any] | None) -> tuple[dict[str, Any], float]:
            new, expires, count = add_failure(state, now, self.policy)
            locks.append(count)
            return new, expires

        store.update_throttle(account_key(username), change, now)
        return locks[-1]

    def succeeded(self, store: ThrottleStore, username: str, now: float) -> None:
        store.update_throttle(account_key(username), lambda _: ({}, now), now)
