"""Polling with a deadline: the harness waits for a state, never for a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL_INTERVAL = 0.01  # seconds between checks; short, the checks are cheap


def wait_until(check: Callable[[], T], timeout: float, failure: Callable[[float], Exception]) -> T:
    """The first truthy result of ``check``; ``failure(timeout)`` is raised when none came
    within ``timeout`` seconds (built late, so it can describe the state at that moment)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise failure(timeout)
        time.sleep(POLL_INTERVAL)
