"""Login throttling (issue 17, finding 6): per account, per client address, and a cap on password hashes.

Each login attempt costs an argon2id hash (64 MiB, ~0.1 s of a core): unthrottled, a guesser tries
passwords as fast as the hub hashes them, and parallel attempts exhaust its memory. Three walls:

* **per client address**: a token bucket of attempts (``CLIENT_BURST`` at once, then
  ``CLIENT_RATE`` a second); beyond it, 429 with ``Retry-After`` before any hashing.
* **per account**: ``MAX_FAILURES`` wrong passwords within ``WINDOW_S`` lock the account name for
  ``LOCKOUT_S`` (429 with ``Retry-After``, even for the right password; an audit entry says so).
  Names that do not exist lock the same way, so a lockout reveals nothing about who exists. The
  cost: someone who knows a username can keep its owner from logging in by password for a while;
  tokens already issued keep working, and an admin can issue a new one (``vigie hub user token``).
* **hashes at once**: :data:`HASH_SLOTS` (in ``hub/auth.py``) lets only a few argon2 hashes run at
  the same time; a login that waits too long for one gets 503 with ``Retry-After``.

The state is per hub process (like the API rate limit). The decisions are pure functions of the
recorded times, so the tests drive them with explicit clocks.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from hub.ratelimit import RateLimiter

__all__ = ["LoginGuard", "ThrottlePolicy"]


@dataclass(frozen=True)
class ThrottlePolicy:
    """How many wrong passwords and attempts are allowed before the hub says 429."""

    max_failures: int = 5
    window_s: float = 15 * 60
    lockout_s: float = 15 * 60
    client_rate: float = 0.2  # attempts a second per address, sustained (12 a minute)
    client_burst: int = 10
    max_tracked: int = 10_000  # account names remembered at once (memory stays bounded)


def _key(username: str) -> str:
    """Names compare without case; a name of a megabyte is remembered by its first 128 characters."""
    return username.casefold()[:128]


@dataclass
class _Account:
    failures: list[float] = field(default_factory=list)
    locked_until: float = 0.0


class LoginGuard:
    """Decides whether a login attempt may be tried, and records failures and successes."""

    def __init__(self, policy: ThrottlePolicy | None = None) -> None:
        self.policy = policy or ThrottlePolicy()
        self._clients = RateLimiter(self.policy.client_rate, self.policy.client_burst)
        self._accounts: dict[str, _Account] = {}
        self._lock = threading.Lock()

    def wait_s(self, username: str, client: str, now: float) -> tuple[float, str] | None:
        """(seconds to wait, why) when this attempt must be refused with 429; None to go on."""
        with self._lock:
            account = self._accounts.get(_key(username))
            if account is not None and account.locked_until > now:
                return account.locked_until - now, f"account {username!r} is locked after repeated failures"
        allowed, wait = self._clients.allow(client, now)
        if not allowed:
            return wait, f"too many login attempts from {client}"
        return None

    def failed(self, username: str, now: float) -> int | None:
        """Record a wrong password; returns the failure count when this one locks the account."""
        p = self.policy
        with self._lock:
            if len(self._accounts) >= p.max_tracked:
                self._forget(now)
            account = self._accounts.setdefault(_key(username), _Account())
            account.failures = [t for t in account.failures if t > now - p.window_s] + [now]
            if len(account.failures) >= p.max_failures:
                count = len(account.failures)
                account.locked_until, account.failures = now + p.lockout_s, []
                return count
        return None

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._accounts.pop(_key(username), None)

    def _forget(self, now: float) -> None:
        """Drop the accounts with neither a lock nor a recent failure (then the oldest, if still full)."""
        p = self.policy
        self._accounts = {
            name: a
            for name, a in self._accounts.items()
            if a.locked_until > now or any(t > now - p.window_s for t in a.failures)
        }
        while len(self._accounts) >= p.max_tracked:
            self._accounts.pop(next(iter(self._accounts)))
