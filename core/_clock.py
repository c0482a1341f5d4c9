"""Clocks.  Every decision about time (expiry, idleness) asks the manager's clock.

A clock is any zero-argument callable returning milliseconds since the epoch, so
tests pass a :class:`ManualClock` and move it forward instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Clock", "ManualClock", "system_clock"]

Clock = Callable[[], int]


def system_clock() -> int:
    """Wall-clock milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told to: ``clock.advance(ms)``."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now = start_ms
        self._lock = threading.Lock()

    def __call__(self) -> int:
        return self._now

    def advance(self, ms: int) -> int:
        """Move forward by ``ms`` (>= 0) and return the new time."""
        if ms < 0:
            raise ValueError("a ManualClock only moves forward")
        with self._lock:
            self._now += ms
            return self._now

    def set(self, now_ms: int) -> None:
        """Jump to ``now_ms`` (not earlier than the current time)."""
        with self._lock:
            if now_ms < self._now:
                raise ValueError("a ManualClock only moves forward")
            self._now = now_ms

    def __repr__(self) -> str:
        return f"ManualClock({self._now})"
