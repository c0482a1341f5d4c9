"""Hibernation (DESIGN §5)."""

from __future__ import annotations

import pytest

import torpor
from tests.conftest import OpenFn
from torpor.sample import chat_session


def test_counts_exactly_the_idle_sessions(mgr: torpor.Manager, clock: torpor.ManualClock) -> None:
    old = [mgr.create({"i": i}).id for i in range(30)]
    clock.advance(1000)
    boundary = mgr.create({"edge": True}).id  # idle for exactly the threshold below
    clock.advance(500)
    fresh = [mgr.create({"i": i}).id for i in range(10)]
    # now - last_accessed: old 1500, boundary 500, fresh 0.  Strictly more than 500:
    assert mgr.hibernate_idle(500) == 30
    assert mgr.hibernate_idle(500) == 0
    assert all(mgr.peek(i).hibernated for i in old)  # type: ignore[union-attr]
    assert not mgr.peek(boundary).hibernated  # type: ignore[union-attr]
    assert not any(mgr.peek(i).hibernated for i in fresh)  # type: ignore[union-attr]


def test_leaves_last_accessed_and_expiry_alone(
    mgr: torpor.Manager, clock: torpor.ManualClock
) -> None:
    s = mgr.create({"x": 1}, timeout_ms=1000)
    clock.advance(600)
    assert mgr.hibernate_idle(500) == 1
    h = mgr.peek(s.id)
    assert h is not None and h.hibernated and h.last_accessed == s.last_accessed
    clock.advance(401)  # 1001 ms after the last access: expired, not delayed
    assert mgr.get(s.id) is None


def test_get_wakes_with_identical_data(mgr: torpor.Manager, clock: torpor.ManualClock) -> None:
    import random

    data = chat_session(random.Random(3))
    s = mgr.create(data)
    clock.advance(100)
    assert mgr.hibernate_idle(10) == 1
    for read in (mgr.peek(s.id), next(mgr.sessions())):
        assert read is not None and read.hibernated and read.data == data
    assert list(mgr.ids()) == [s.id]
    assert mgr.peek(s.id).hibernated  # type: ignore[union-attr]  # still asleep
    woken = mgr.get(s.id)
    assert woken is not None and not woken.hibernated and woken.data == data
    assert woken.last_accessed == clock() and woken.version == s.version
    assert not mgr.peek(s.id).hibernated  # type: ignore[union-attr]


def test_activity_prevents_hibernation(mgr: torpor.Manager, clock: torpor.ManualClock) -> None:
    busy = mgr.create({}).id
    idle = mgr.create({}).id
    for _ in range(5):
        clock.advance(400)
        mgr.get(busy)
    assert mgr.hibernate_idle(500) == 1
    assert mgr.peek(idle).hibernated and not mgr.peek(busy).hibernated  # type: ignore[union-attr]


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
    assert after * 4 < before  # live chat data vs zstd-compressed msgpack


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
