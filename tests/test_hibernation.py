"""Hibernation (DESIGN §5): what the conformance kit does not check (its hibernation
area runs on ets_like, the fallback-only backend and lmdb in tests/test_kit_catches.py)."""

from __future__ import annotations

import pytest

import torpor
from tests.conftest import OpenFn
from torpor.sample import chat_session


def test_update_and_touch_of_hibernated(mgr: torpor.Manager, clock: torpor.ManualClock) -> None:
    s = mgr.create({"n": 1})
    clock.advance(100)
    mgr.hibernate_idle(10)
    assert mgr.touch(s.id)
    t = mgr.peek(s.id)
    assert t is not None and t.hibernated and t.last_accessed == clock()
    u = mgr.update(s.id, lambda d: {"n": d["n"] + 1})
    assert not u.hibernated and u.data == {"n": 2}


def test_hibernation_saves_memory_on_ets_like(
    ets: torpor.Manager, clock: torpor.ManualClock
) -> None:
    import random

    mgr = ets
    rng = random.Random(1)
    for _ in range(200):
        mgr.create(chat_session(rng))
    before = mgr.stats().memory_bytes
    clock.advance(60_000)
    assert mgr.hibernate_idle(30_000) == 200
    after = mgr.stats().memory_bytes
    assert before is not None and after is not None
    # msgpack bytes vs zstd frames; the memory figure itself is checked against
    # tracemalloc in test_compact_memory.py.
    assert after * 2 < before


def test_default_threshold_and_none(open_mgr: OpenFn, clock: torpor.ManualClock) -> None:
    mgr = open_mgr(hibernate_after_ms=100)
    mgr.create({})
    clock.advance(101)
    assert mgr.hibernate_idle() == 1
    off = open_mgr(hibernate_after_ms=None)
    with pytest.raises(torpor.ConfigError):
        off.hibernate_idle()


def test_events_reach_observers(open_mgr: OpenFn, clock: torpor.ManualClock) -> None:
    seen: list[torpor.LifecycleEvent] = []

    class Observer:
        def torpor_event(self, event: torpor.LifecycleEvent) -> None:
            seen.append(event)

    mgr = open_mgr(plugins=[Observer()])
    a = mgr.create({"x": "y" * 500}, timeout_ms=10_000)
    b = mgr.create({})
    clock.advance(100)
    assert mgr.hibernate_idle(50) == 2
    mgr.get(a.id)
    mgr.delete(b.id)
    c = mgr.create({})
    mgr.cancel(c.id)
    clock.advance(20_000)
    mgr.cleanup_expired()
    kinds = [e.kind.value for e in seen]
    assert kinds == [
        "created",
        "created",
        "hibernated",
        "woken",
        "deleted",
        "created",
        "cancelled",
        "expired",
    ]
    hib = seen[2]
    assert hib.count == 2 and hib.session_id is None
    assert seen[3].session_id == a.id


def test_observer_failure_does_not_break_calls(open_mgr: OpenFn) -> None:
    class Broken:
        def torpor_event(self, event: torpor.LifecycleEvent) -> None:
            raise RuntimeError("observer bug")

    mgr = open_mgr(plugins=[Broken()])
    assert mgr.create({}).version == 1


def test_native_sweeps_do_not_scan_the_store(clock: torpor.ManualClock) -> None:
    from collections.abc import Generator
    from typing import Any

    class Count:
        def __init__(self) -> None:
            self.calls: dict[str, int] = {}

        def _hit(self, name: str) -> None:
            self.calls[name] = self.calls.get(name, 0) + 1

        @torpor.hookimpl(wrapper=True)
        def torpor_fetch(self, session_id: str) -> Generator[None, Any, Any]:
            self._hit("fetch")
            return (yield)

        @torpor.hookimpl(wrapper=True)
        def torpor_iterate(self, cursor: Any, batch_size: int) -> Generator[None, Any, Any]:
            self._hit("iterate")
            return (yield)

    count = Count()
    with torpor.open("ets_like", clock=clock, sweeper=False, plugins=[count]) as mgr:
        idle = [mgr.create({"i": i}, timeout_ms=1000).id for i in range(10)]
        clock.advance(2000)
        for i in range(5000):
            mgr.create({"i": i}, timeout_ms=None)
        count.calls.clear()
        assert mgr.hibernate_idle(1500) == 10
        assert mgr.cleanup_expired() == 10
        assert count.calls.get("iterate", 0) == 0
        assert count.calls["fetch"] == 20  # one re-check per candidate, nothing else
        assert all(i not in mgr for i in idle)
