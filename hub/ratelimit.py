"""Token buckets: API tokens (hub/auth.py) and devices on the ingest path (hub/ingest.py).

The buckets are in the shared store (``hub/storage/buckets.py``), not in the process: N uvicorn
workers, N ingest workers or N hub hosts on one database allow one rate per key, not N times it.
Each limiter prefixes its keys (``api:``, ``device:``), so an API token and a device never share one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from hub.storage.base import BucketStore

__all__ = ["RateLimiter"]


class RateLimiter:
    """A token bucket per key in the shared store: ``rate`` a second, bursts up to ``burst``."""

    def __init__(self, store: BucketStore, scope: str, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate limit {scope!r}: rate must be > 0 and burst >= 1 (got {rate}, {burst})")
        self.store = store
        self.scope = scope
        self.rate = rate
        self.burst = burst

    def allow(self, key: str, now: float | None = None) -> tuple[bool, float]:
        """Take one token: (allowed, seconds to wait when not)."""
        if self.take({key: 1}, now)[key]:
            return True, 0.0
        # Empty: the next token comes within 1/rate (the bucket's fraction is not returned).
        return False, 1 / self.rate

    def take(self, wanted: Mapping[str, int], now: float | None = None) -> dict[str, int]:
        """Up to ``wanted[key]`` tokens for each key, in one statement; how many each key got."""
        # Wall-clock time: every process and host reads the same clock (NTP), unlike monotonic().
        now = time.time() if now is None else now
        prefix = self.scope + ":"
        got = self.store.take_tokens({prefix + k: n for k, n in wanted.items()}, self.rate, self.burst, now)
        return {k: got.get(prefix + k, 0) for k in wanted}
