"""The background sweeper: a daemon thread that runs each maintenance job on its own
cadence (hibernation every ``hibernate_after_ms / 2``, expiry every
``cleanup_interval_ms``).

It holds its manager weakly, so a forgotten manager is not kept alive by its thread.
``kick()`` runs every job now (tests and the CLI use it instead of waiting);
``stop(urgent)`` either lets the running pass finish or interrupts it at the next
session.  A failing pass is logged and retried at the next interval, never fatal.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence

from torpor._sweeps import StopFlag

__all__ = ["Job", "Sweeper"]

log = logging.getLogger("torpor.sweeper")

Job = tuple[str, float, "weakref.WeakMethod[Callable[[StopFlag], object]]"]
"""(name, interval in seconds, the manager's method that runs it)."""


class Sweeper:
    def __init__(self, jobs: Sequence[Job]) -> None:
        self._jobs = list(jobs)
        now = time.monotonic()
        self._due = {name: now + interval for name, interval, _ in self._jobs}
        self._wake = threading.Event()
        self._kicked = False
        self._stopping = False
        self._urgent = False
        self._passes = 0
        self._passes_cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="torpor-sweeper", daemon=True)
        self._thread.start()

    @property
    def passes(self) -> int:
        """How many passes (runs of at least one job) have completed."""
        return self._passes

    @property
    def jobs(self) -> dict[str, float]:
        """Each job's interval in seconds."""
        return {name: interval for name, interval, _ in self._jobs}

    def kick(self) -> None:
        self._kicked = True
        self._wake.set()

    def wait_for_pass(self, after: int, timeout: float = 30.0) -> bool:
        """Block until more than ``after`` passes have completed (for tests/CLI)."""
        deadline = time.monotonic() + timeout
        with self._passes_cond:
            while self._passes <= after:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._passes_cond.wait(remaining)
        return True

    def hurry(self) -> None:
        """Interrupt the running pass at the next session (an urgent close)."""
        self._urgent = True

    def stop(self, *, urgent: bool) -> None:
        self._urgent = self._urgent or urgent
        self._stopping = True
        self._wake.set()
        if threading.current_thread() is not self._thread:  # a manager freed by its own pass
            self._thread.join()

    def _should_stop(self) -> bool:
        return self._urgent

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(max(0.0, min(self._due.values()) - time.monotonic()))
            self._wake.clear()
            if self._stopping:
                return
            kicked, self._kicked = self._kicked, False
            ran = False
            for name, interval, method in self._jobs:
                now = time.monotonic()
                if not kicked and now < self._due[name]:
                    continue
                self._due[name] = now + interval
                work = method()
                if work is None:  # the manager was freed
                    return
                ran = True
                try:
                    work(self._should_stop)
                except Exception:  # a failing pass must not kill the sweeper
                    log.exception("torpor sweeper: %s pass failed; will retry", name)
                del work  # hold the manager only while a pass runs
                if self._stopping:
                    break
            if ran:
                with self._passes_cond:
                    self._passes += 1
                    self._passes_cond.notify_all()
