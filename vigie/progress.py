"""A progress bar on stderr for long work (imports, learning, backtests); shown on terminals only."""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """``bar = Progress("importing", unit="rows"); bar(done, total)``; ``bar.done()`` ends the line."""

    def __init__(self, label: str, unit: str = "", *, force: bool = False) -> None:
        self.label = label
        self.unit = unit
        self.started = time.monotonic()
        self.enabled = force or sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, done: int, total: int | None = None) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and (total is None or done < total)):
            return
        self._last = now
        rate = done / max(now - self.started, 1e-9)
        if total:
            filled = int(30 * min(done, total) / total)
            eta = (total - done) / rate if rate > 0 else 0
            bar = "#" * filled + "." * (30 - filled)
            text = f"{self.label} [{bar}] {done}/{total} {self.unit} ({eta:.0f} s left)"
        else:
            text = f"{self.label} {done} {self.unit} ({rate:.0f}/s)"
        print(f"\r{text}\033[K", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.enabled:
            print(file=sys.stderr)
