"""The manager's use of ``torpor_expire`` (a backend's native expiry sweep).

``tests.broken_backends.ExpiringMinimal`` is the correct native sweep these run on;
the kit's expiry, mailbox and damaged areas test what each step does (and
``tests/broken_backends`` holds the mistakes they catch).  Here: when the manager
may take the shortcut and when it must run its own pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pytest

import torpor
from tests.broken_backends import ExpiringMinimal
from tests.minimal_backend import MinimalBackend
from torpor import Capability, Expired, hookimpl
from torpor.errors import BackendUnavailable, ConfigError


class _Counted(ExpiringMinimal):
    """Counts its native sweeps, and whether each one's generator was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.sweeps = 0
        self.closed_steps = 0
        self.fail_transacts = 0
        self.resolution = 0

    def torpor_touch_resolution_ms(self) -> int:
        return self.resolution

    def torpor_transact(self, session_id: str, fn: Any) -> None:
        if self.fail_transacts:
            self.fail_transacts -= 1
            raise BackendUnavailable("a flaky link")
        super().torpor_transact(session_id, fn)

    def torpor_expire(self, now_ms: int, batch_size: int) -> Iterator[Expired]:
        self.sweeps += 1
        try:
            yield from super().torpor_expire(now_ms, batch_size)
        finally:
            self.closed_steps += 1


def _open(backend: object, clock: torpor.ManualClock, **options: Any) -> torpor.Manager:
    options.setdefault("sweeper", False)
    return torpor.open(backend, clock=clock, **options)


def test_cleanup_removes_through_the_native_sweep_a_batch_per_step() -> None:
    clock = torpor.ManualClock()
    backend = _Counted()
    events: list[torpor.LifecycleEvent] = []

    class Observer:
        @hookimpl
        def torpor_event(self, event: torpor.LifecycleEvent) -> None:
            events.append(event)

    with _open(backend, clock, sweep_batch_size=4, plugins=[Observer()]) as mgr:
        ids = [mgr.create({"i": i}, timeout_ms=10).id for i in range(10)]
        keep = mgr.create({}, timeout_ms=None).id
        clock.advance(11)
        assert mgr.cleanup_expired() == 10
        assert backend.sweeps == 1 and backend.closed_steps == 1
        assert list(mgr.ids()) == [keep] and not any(sid in mgr for sid in ids)
    expired = [e.count for e in events if e.kind is torpor.EventKind.EXPIRED]
    assert expired == [4, 4, 2]  # one event per committed step


def test_an_urgent_stop_between_steps_closes_the_sweep_and_reports_it_interrupted() -> None:
    clock = torpor.ManualClock()
    backend = _Counted()
    with _open(backend, clock, sweep_batch_size=3) as mgr:
        for i in range(9):
            mgr.create({"i": i}, timeout_ms=10)
        clock.advance(11)
        removed_before_stop: list[int] = []

        def stop() -> bool:
            removed_before_stop.append(9 - len(backend.blobs))
            return removed_before_stop[-1] >= 3  # after the first step

        mgr.run_maintenance(stop)
        assert len(backend.blobs) == 6  # one whole step, nothing half done
        assert backend.closed_steps == backend.sweeps == 1  # the generator was closed
        assert mgr.cleanup_expired() == 6


def test_a_buffered_touch_sends_the_pass_through_the_manager_which_keeps_the_session() -> None:
    # The native step sees only the store; a touch this manager still buffers (here:
    # its flush failed) would not count there.  So the manager runs its own pass,
    # which lays the touch over the stored record: the session read stays.
    clock = torpor.ManualClock()
    backend = _Counted()
    backend.resolution = 1000
    opts = {"sweeper": True, "hibernate_after_ms": None, "cleanup_interval_ms": None}
    with _open(backend, clock, **opts) as mgr:
        read = mgr.create({}, timeout_ms=10_000).id
        other = mgr.create({}, timeout_ms=10_000).id
        clock.advance(5_000)
        assert mgr.get(read) is not None  # buffered: deadline 15 s as this manager sees it
        clock.advance(5_001)  # the stored deadline (10 s) has passed
        backend.fail_transacts = 2  # the overdue flush and the one before the sweep fail
        assert mgr.cleanup_expired() == 1
        assert backend.sweeps == 0, "the native sweep ran with a touch buffered"
        assert read in mgr and other not in mgr
        assert mgr.flush() == 1
        assert mgr.cleanup_expired() == 0 and backend.sweeps == 1  # empty buffer: native


def test_a_plugin_wrapping_the_removals_it_stands_for_turns_the_shortcut_off() -> None:
    # An extension plugin that wraps torpor_transact_batch (to count or trace writes)
    # must see the sweep's removals; one that also wraps torpor_expire sees it whole.
    class Tracer:
        def __init__(self) -> None:
            self.calls: list[str] = []

        @hookimpl(wrapper=True)
        def torpor_transact_batch(self, session_ids: Any, fn: Any) -> Any:
            self.calls.append("transact_batch")
            return (yield)

    class SweepTracer(Tracer):
        @hookimpl(wrapper=True)
        def torpor_expire(self, now_ms: int, batch_size: int) -> Any:
            self.calls.append("expire")
            return (yield)

    class Batched(_Counted):
        def torpor_transact_batch(self, session_ids: Any, fn: Any) -> None:
            for sid in session_ids:
                super().torpor_transact(sid, lambda current, sid=sid: fn(sid, current))

    for plugin, expected in ((Tracer(), "transact_batch"), (SweepTracer(), "expire")):
        clock = torpor.ManualClock()
        backend = Batched()
        with _open(backend, clock, plugins=[plugin]) as mgr:
            mgr.create({}, timeout_ms=10)
            clock.advance(11)
            assert mgr.cleanup_expired() == 1
        assert plugin.calls == [expected]
        assert backend.sweeps == (1 if expected == "expire" else 0)


def test_damaged_values_a_step_reports_are_logged_once_and_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = torpor.ManualClock()
    backend = _Counted()
    with _open(backend, clock) as mgr:
        mgr.create({}, timeout_ms=10)
        backend.conformance_plant(b"junk", b"not a record")
        clock.advance(11)
        assert mgr.cleanup_expired() == 1
        assert mgr.cleanup_expired() == 0
        assert "junk" in backend.blobs
    logged = [r for r in caplog.records if "'junk'" in r.getMessage()]
    assert len(logged) == 1, logged


class _NoTransact(MinimalBackend):
    def torpor_capabilities(self) -> Iterable[Capability]:
        return [Capability.NATIVE_EXPIRY]

    def torpor_expired_ids(self, now_ms: int, limit: int) -> list[str]:
        return []

    def torpor_expire(self, now_ms: int, batch_size: int) -> Iterator[Expired]:
        yield from ()


class _NoExpiredIds(MinimalBackend):
    def torpor_capabilities(self) -> Iterable[Capability]:
        return [Capability.ATOMIC_UPDATE]

    def torpor_transact(self, session_id: str, fn: Any) -> None:
        fn(self.blobs.get(session_id))

    def torpor_expire(self, now_ms: int, batch_size: int) -> Iterator[Expired]:
        yield from ()


@pytest.mark.parametrize("backend", [_NoTransact, _NoExpiredIds])
def test_torpor_expire_needs_the_expiry_index_and_atomic_transactions(backend: type) -> None:
    with pytest.raises(ConfigError, match="torpor_expire without torpor_expired_ids and"):
        torpor.open(backend(), sweeper=False)
