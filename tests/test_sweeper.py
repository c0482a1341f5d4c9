"""The background sweeper and urgent close (DESIGN §5, §7)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import pytest

import torpor
from torpor.plugins.ets_like import EtsLikeBackend


class Progress:
    """Observer: counts hibernations and signals the first batch."""

    def __init__(self) -> None:
        self.hibernated = 0
        self.first_batch = threading.Event()

    def torpor_event(self, event: torpor.LifecycleEvent) -> None:
        if event.kind is torpor.EventKind.HIBERNATED:
            self.hibernated += event.count
            self.first_batch.set()


def _open(clock: torpor.ManualClock, **options: object) -> torpor.Manager:
    # A long real-time interval: passes run only when the test kicks the sweeper.
    return torpor.open(
        clock=clock, hibernate_after_ms=1000, cleanup_interval_ms=3_600_000, **options
    )


def test_sweeper_hibernates_and_expires(clock: torpor.ManualClock) -> None:
    with _open(clock) as mgr:
        assert mgr.sweeper is not None
        idle = mgr.create({}).id
        doomed = mgr.create({}, timeout_ms=500).id
        clock.advance(2000)
        fresh = mgr.create({}).id
        before = mgr.sweeper.passes
        mgr.sweeper.kick()
        assert mgr.sweeper.wait_for_pass(before)
        assert mgr.peek(idle).hibernated  # type: ignore[union-attr]
        assert not mgr.peek(fresh).hibernated  # type: ignore[union-attr]
        assert len(mgr) == 2 and doomed not in mgr


class Restarting(EtsLikeBackend):
    """A store whose idle query fails while it restarts (the first ``failures`` calls)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def torpor_idle_ids(self, cutoff_ms: int, limit: int) -> Sequence[str]:
        if self.failures:
            self.failures -= 1
            raise torpor.BackendUnavailable("the store is restarting")
        return super().torpor_idle_ids(cutoff_ms, limit)


def test_a_failing_pass_is_logged_and_the_sweeper_keeps_going(
    clock: torpor.ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    backend = Restarting(failures=2)
    with (
        caplog.at_level(logging.ERROR, logger="torpor.sweeper"),
        _open(clock, backend=backend) as mgr,
    ):
        assert mgr.sweeper is not None
        idle = mgr.create({}).id
        doomed = mgr.create({}, timeout_ms=500).id
        clock.advance(2000)
        for failing in (2, 1):
            before = mgr.sweeper.passes
            mgr.sweeper.kick()
            assert mgr.sweeper.wait_for_pass(before)
            assert backend.failures == failing - 1
            assert not mgr.peek(idle).hibernated  # type: ignore[union-attr]
            # Expiry is a job of its own: the hibernation pass failing does not stop it.
            assert doomed not in mgr and len(mgr) == 1
        before = mgr.sweeper.passes
        mgr.sweeper.kick()  # the store is back: the next pass does the work
        assert mgr.sweeper.wait_for_pass(before)
        assert mgr.peek(idle).hibernated  # type: ignore[union-attr]
    failures = [r for r in caplog.records if r.name == "torpor.sweeper"]
    assert [r.getMessage() for r in failures] == [
        "torpor sweeper: hibernation pass failed; will retry"
    ] * 2
    assert all(r.levelno == logging.ERROR for r in failures)
    assert all(
        r.exc_info and isinstance(r.exc_info[1], torpor.BackendUnavailable) for r in failures
    )


def test_no_sweeper_when_disabled(clock: torpor.ManualClock) -> None:
    with torpor.open(clock=clock, hibernate_after_ms=None, cleanup_interval_ms=None) as mgr:
        assert mgr.sweeper is None


def _close_mid_sweep(clock: torpor.ManualClock, n: int, *, urgent: bool) -> int:
    """Fill a store with ``n`` idle sessions, start a sweep, close once the first batch
    is done; return how many sessions the sweep hibernated in all."""
    progress = Progress()
    mgr = _open(clock, plugins=[progress], sweep_batch_size=200)
    for i in range(n):
        mgr.create({"i": i})
    clock.advance(5000)
    assert mgr.sweeper is not None
    mgr.sweeper.kick()
    assert progress.first_batch.wait(30)
    mgr.close(urgent=urgent)
    assert mgr.closed
    return progress.hibernated


def test_urgent_close_interrupts_a_sweep_without_draining(clock: torpor.ManualClock) -> None:
    assert 0 < _close_mid_sweep(clock, 20_000, urgent=True) < 20_000  # stopped, not drained


def test_plain_close_lets_the_running_pass_finish(clock: torpor.ManualClock) -> None:
    assert _close_mid_sweep(clock, 5_000, urgent=False) == 5_000


def test_a_forgotten_manager_does_not_keep_its_sweeper_alive(clock: torpor.ManualClock) -> None:
    import gc

    mgr = _open(clock)
    sweeper = mgr.sweeper
    assert sweeper is not None
    before = sweeper.passes
    sweeper.kick()
    assert sweeper.wait_for_pass(before)  # a pass ran, and its reference was released
    del mgr
    gc.collect()
    sweeper.kick()
    sweeper._thread.join(timeout=10)
    assert not sweeper._thread.is_alive()


def test_cleanup_interval_none_never_expires_automatically(clock: torpor.ManualClock) -> None:
    with torpor.open(clock=clock, hibernate_after_ms=1000, cleanup_interval_ms=None) as mgr:
        assert mgr.sweeper is not None and set(mgr.sweeper.jobs) == {"hibernation"}
        idle = mgr.create({}).id
        doomed = mgr.create({}, timeout_ms=500).id
        clock.advance(2000)
        before = mgr.sweeper.passes
        mgr.sweeper.kick()
        assert mgr.sweeper.wait_for_pass(before)
        assert mgr.peek(idle).hibernated  # type: ignore[union-attr]
        assert mgr.stats().expired_pending == 1  # expired, and left for cleanup_expired()
        assert mgr.cleanup_expired() == 1 and doomed not in mgr


def test_each_job_runs_on_its_own_interval(clock: torpor.ManualClock) -> None:
    with torpor.open(clock=clock, hibernate_after_ms=30_000, cleanup_interval_ms=60_000) as mgr:
        assert mgr.sweeper is not None
        assert mgr.sweeper.jobs == {"hibernation": 15.0, "expiry": 60.0}
    with torpor.open(clock=clock, hibernate_after_ms=None, cleanup_interval_ms=250) as mgr:
        assert mgr.sweeper is not None and mgr.sweeper.jobs == {"expiry": 0.25}


def test_touch_resolution_never_exceeds_half_a_timeout(clock: torpor.ManualClock) -> None:
    # A 1 s resolution with a 900 ms timeout: a session read every 400 ms must live on.
    with torpor.open(
        clock=clock, sweeper=False, touch_resolution_ms=1000, hibernate_after_ms=None
    ) as mgr:
        s = mgr.create({}, timeout_ms=900)
        for _ in range(20):
            clock.advance(400)
            assert mgr.get(s.id) is not None
        assert mgr.peek(s.id) is not None


def test_touch_resolution_never_exceeds_half_of_hibernate_after(clock: torpor.ManualClock) -> None:
    with torpor.open(
        clock=clock, sweeper=False, touch_resolution_ms=1000, hibernate_after_ms=600
    ) as mgr:
        assert mgr.touch_resolution_ms == 300
        s = mgr.create({}, timeout_ms=None)
        for _ in range(10):
            clock.advance(350)
            mgr.get(s.id)
            assert mgr.hibernate_idle() == 0  # read regularly: never idle past 600 ms
