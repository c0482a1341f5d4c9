"""Hibernation (docs/contract.md §5)."""

from __future__ import annotations

import random

import pytest

import torpor
from torpor.conformance._kit import STEP_MS, Kit
from torpor.conformance._marks import kit_module
from torpor.conformance._model import Counts, check_counts
from torpor.conformance.helpers import expect_returns
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


def test_expired_unswept_sessions_are_hibernated_and_counted(kit: Kit) -> None:
    # docs/contract.md §5: hibernate_idle hibernates every idle session not hibernated
    # yet, expired ones not yet removed included, and counts them all.
    mgr = kit.open(sweep_batch_size=2)
    short = [mgr.create({"i": i}, timeout_ms=STEP_MS).id for i in range(10)]
    never = [mgr.create({"i": i}, timeout_ms=None).id for i in range(10)]
    kit.clock.advance(2 * STEP_MS)
    check_counts(mgr, Counts(10, 10, 0, 10, 20), never, "10 of 20 idle sessions expired")
    expect_returns(
        20, mgr.hibernate_idle, STEP_MS, what="hibernate_idle() of 10 live and 10 expired"
    )
    expect_returns(0, mgr.hibernate_idle, STEP_MS, what="a second hibernate_idle()")
    check_counts(mgr, Counts(10, 0, 10, 10, 20), never, "hibernate_idle()")
    expect_returns(10, mgr.cleanup_expired)
    assert not set(short) & set(mgr.list_utf8_ids())


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


def test_memory_follows_deletes_and_expiry(kit: Kit) -> None:
    # memory_bytes is what the sessions take: what a removal frees must leave it, or
    # a store that churns reports its high-water mark forever.
    mgr = kit.open()
    empty = mgr.stats().memory_bytes
    if empty is None:
        pytest.skip("missing: backend does not report memory_bytes")
    rng = random.Random(8)
    asleep = [mgr.create(chat_session(rng), timeout_ms=None).id for _ in range(40)]
    short = [mgr.create(chat_session(rng), timeout_ms=3 * STEP_MS).id for _ in range(40)]
    kit.clock.advance(2 * STEP_MS)
    expect_returns(80, mgr.hibernate_idle, STEP_MS)
    awake = [mgr.create(chat_session(rng), timeout_ms=None).id for _ in range(40)]
    full = _memory(mgr)
    assert full > empty, f"memory_bytes {full} with 120 sessions, {empty} with none"
    slack = (full - empty) // 20  # an engine may keep a little (a root page, a header)
    for sid in asleep + awake:
        expect_returns(True, mgr.delete, sid)
    kit.clock.advance(2 * STEP_MS)
    expect_returns(40, mgr.cleanup_expired)
    assert mgr.list_utf8_ids() == [], f"left stored: {mgr.list_utf8_ids()} of {short}"
    freed = _memory(mgr)
    assert freed <= empty + slack, (
        f"memory_bytes is {freed} once every session is deleted or expired: {empty} when "
        f"the store was empty, {full} with 120 sessions"
    )
    for _ in range(40):
        mgr.create(chat_session(rng), timeout_ms=None)
    again = _memory(mgr)
    assert again > freed + slack, f"memory_bytes {again} after 40 creates, {freed} before"


def _memory(mgr: torpor.Manager) -> int:
    memory = mgr.stats().memory_bytes
    assert memory is not None, "memory_bytes became None"
    return memory


def test_sweeps_go_past_one_batch(kit: Kit) -> None:
    # Batches of 2 (8 a call to the index): each pass spans several calls, and the idle
    # order starts with sessions hibernated (or woken) earlier, which an index must not
    # hand back as candidates.
    mgr = kit.open(sweep_batch_size=2)
    first = [mgr.create({"i": i}, timeout_ms=None).id for i in range(30)]
    kit.clock.advance(2 * STEP_MS)
    expect_returns(30, mgr.hibernate_idle, STEP_MS, what="hibernate_idle() of 30 in batches of 2")
    woken = first[::3]
    for sid in woken:
        mgr.get(sid)
    second = [mgr.create({"i": i}, timeout_ms=None).id for i in range(40)]
    kit.clock.advance(2 * STEP_MS)
    fresh = [mgr.create({}, timeout_ms=None).id for _ in range(5)]
    expect_returns(
        50, mgr.hibernate_idle, STEP_MS, what="hibernate_idle() of 40 new and 10 woken, "
        "behind 20 already hibernated",
    )  # fmt: skip
    expect_returns(0, mgr.hibernate_idle, STEP_MS, what="a second hibernate_idle()")
    awake = {s.id for s in mgr.sessions() if not s.hibernated}
    assert awake == set(fresh), f"still active: {sorted(awake - set(fresh))}"
    check_counts(mgr, Counts(75, 5, 70, 0, 75), first + second + fresh, "the sweeps")


def test_a_woken_session_hibernates_again(kit: Kit) -> None:
    mgr = kit.open()
    ids = [mgr.create({"i": i}, timeout_ms=None).id for i in range(12)]
    kit.clock.advance(2 * STEP_MS)
    expect_returns(12, mgr.hibernate_idle, STEP_MS)
    for sid in ids[:4]:
        mgr.get(sid)  # woken by a read
    for sid in ids[4:8]:
        mgr.update(sid, lambda d: {**d, "x": 1})  # woken by a write
    for sid in ids[8:]:
        mgr.touch(sid)  # stays hibernated
    kit.clock.advance(2 * STEP_MS)
    expect_returns(8, mgr.hibernate_idle, STEP_MS, what="hibernate_idle() of 8 woken sessions")
    for cycle in range(2):
        for sid in ids:
            mgr.get(sid)
        kit.clock.advance(2 * STEP_MS)
        expect_returns(12, mgr.hibernate_idle, STEP_MS, what=f"hibernate_idle() after wake {cycle}")


def test_counts_follow_hibernation_and_wake(kit: Kit) -> None:
    mgr = kit.open()
    ids = [mgr.create({"i": i}, timeout_ms=None).id for i in range(6)]
    short = mgr.create({}, timeout_ms=3 * STEP_MS).id
    live = {*ids, short}
    check_counts(mgr, Counts(7, 7, 0, 0, 7), live, "create")
    kit.clock.advance(2 * STEP_MS)
    expect_returns(7, mgr.hibernate_idle, STEP_MS)
    check_counts(mgr, Counts(7, 0, 7, 0, 7), live, "hibernate_idle")
    mgr.get(ids[0])
    check_counts(mgr, Counts(7, 1, 6, 0, 7), live, "get (a wake)")
    mgr.update(ids[1], lambda d: {**d, "x": 1})
    check_counts(mgr, Counts(7, 2, 5, 0, 7), live, "update of a hibernated session")
    mgr.touch(ids[2])
    check_counts(mgr, Counts(7, 2, 5, 0, 7), live, "touch of a hibernated session")
    mgr.delete(ids[3])
    live.remove(ids[3])
    check_counts(mgr, Counts(6, 2, 4, 0, 6), live, "delete of a hibernated session")
    mgr.create({"again": True}, session_id=ids[3], timeout_ms=None)
    live.add(ids[3])
    check_counts(mgr, Counts(7, 3, 4, 0, 7), live, "create again under the deleted id")
    kit.clock.advance(2 * STEP_MS)  # the hibernated short one expires
    live.remove(short)
    check_counts(mgr, Counts(6, 3, 3, 1, 7), live, "the expiry of a hibernated session")
    expect_returns(3, mgr.hibernate_idle, STEP_MS)
    check_counts(mgr, Counts(6, 0, 6, 1, 7), live, "hibernate_idle")
    expect_returns(1, mgr.cleanup_expired)
    check_counts(mgr, Counts(6, 0, 6, 0, 6), live, "cleanup_expired")
    for sid in ids:
        mgr.get(sid)
    check_counts(mgr, Counts(6, 6, 0, 0, 6), live, "waking every session")


kit_module(globals(), "hibernation")
