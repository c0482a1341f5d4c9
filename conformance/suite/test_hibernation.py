"""Hibernation (DESIGN §5)."""

from __future__ import annotations

import random

import pytest

from torpor.conformance._kit import STEP_MS, Kit
from torpor.conformance._marks import kit_module
from torpor.sample import chat_session


def test_exact_counts_and_idempotence(kit: Kit) -> None:
    mgr = kit.open()
    old = [mgr.create({"i": i}).id for i in range(40)]
    kit.clock.advance(3 * STEP_MS)
    edge = mgr.create({}).id
    kit.clock.advance(STEP_MS)  # edge is idle for exactly the threshold below
    fresh = [mgr.create({"i": i}).id for i in range(15)]
    assert mgr.hibernate_idle(STEP_MS) == 40
    assert mgr.hibernate_idle(STEP_MS) == 0
    states = {s.id: s.hibernated for s in mgr.sessions()}
    assert all(states[i] for i in old) and not states[edge]
    assert not any(states[i] for i in fresh)
    assert mgr.stats().hibernated == 40


def test_last_accessed_untouched_and_expiry_not_delayed(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({"x": 1}, timeout_ms=3 * STEP_MS)
    kit.clock.advance(2 * STEP_MS)
    assert mgr.hibernate_idle(STEP_MS) == 1
    asleep = mgr.peek(s.id)
    assert asleep is not None and asleep.hibernated and asleep.last_accessed == s.last_accessed
    kit.clock.advance(STEP_MS + 1)  # 3 steps + 1 ms after the last access
    assert mgr.peek(s.id) is None and mgr.get(s.id) is None


def test_reads_that_must_not_wake(kit: Kit) -> None:
    mgr = kit.open()
    data = chat_session(random.Random(5))
    s = mgr.create(data)
    kit.clock.advance(2 * STEP_MS)
    assert mgr.hibernate_idle(STEP_MS) == 1
    peeked = mgr.peek(s.id)
    assert peeked is not None and peeked.hibernated and peeked.data == data
    assert list(mgr.ids()) == [s.id]
    walked = list(mgr.sessions())
    assert walked[0].hibernated and walked[0].data == data
    assert s.id in mgr
    assert mgr.peek(s.id).hibernated  # type: ignore[union-attr]


def test_get_wakes_with_identical_data(kit: Kit) -> None:
    mgr = kit.open()
    data = chat_session(random.Random(6))
    s = mgr.create(data)
    kit.clock.advance(2 * STEP_MS)
    mgr.hibernate_idle(STEP_MS)
    woken = mgr.get(s.id)
    assert woken is not None and not woken.hibernated and woken.data == data
    assert woken.last_accessed == kit.clock() and woken.version == 1
    assert not mgr.peek(s.id).hibernated  # type: ignore[union-attr]
    assert mgr.hibernate_idle(STEP_MS) == 0  # just accessed


def test_activity_prevents_hibernation(kit: Kit) -> None:
    mgr = kit.open()
    busy, idle = mgr.create({}).id, mgr.create({}).id
    for _ in range(4):
        kit.clock.advance(STEP_MS)
        mgr.get(busy)
    assert mgr.hibernate_idle(2 * STEP_MS) == 1
    assert mgr.peek(idle).hibernated and not mgr.peek(busy).hibernated  # type: ignore[union-attr]


def test_writes_to_a_hibernated_session(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({"n": 1})
    kit.clock.advance(2 * STEP_MS)
    mgr.hibernate_idle(STEP_MS)
    assert mgr.touch(s.id)
    assert mgr.peek(s.id).hibernated  # type: ignore[union-attr]  # touch keeps it asleep
    updated = mgr.update(s.id, lambda d: {"n": d["n"] + 1})
    assert not updated.hibernated and updated.data == {"n": 2}


def test_memory_drops_on_chat_like_data(kit: Kit) -> None:
    mgr = kit.open()
    rng = random.Random(7)
    for _ in range(300):
        mgr.create(chat_session(rng))
    before = mgr.stats().memory_bytes
    if before is None:
        pytest.skip("missing: backend does not report memory_bytes")
    kit.clock.advance(2 * STEP_MS)
    assert mgr.hibernate_idle(STEP_MS) == 300
    after = mgr.stats().memory_bytes
    assert after is not None and after < before * 0.5, (before, after)


kit_module(globals(), "hibernation")
