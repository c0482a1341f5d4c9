"""Expiry at its exact boundary, on the kit's manual clock (DESIGN §2)."""

from __future__ import annotations

import pytest

import torpor
from torpor.conformance._kit import STEP_MS, Kit
from torpor.conformance._marks import kit_module


def test_boundary_is_strict(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({}, timeout_ms=STEP_MS)
    kit.clock.advance(STEP_MS)
    assert mgr.peek(s.id) is not None and s.id in mgr  # exactly the timeout: alive
    kit.clock.advance(1)
    assert mgr.peek(s.id) is None and s.id not in mgr
    assert mgr.get(s.id) is None
    assert mgr.cleanup_expired() == 0  # get removed it already


def test_expired_is_missing_for_every_call(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({"n": 1}, timeout_ms=10)
    copy = mgr.peek(s.id)
    assert copy is not None
    kit.clock.advance(11)
    with pytest.raises(torpor.SessionNotFound):
        mgr.update(s.id, lambda d: d)
    with pytest.raises(torpor.SessionNotFound):
        mgr.save(copy)
    assert not mgr.touch(s.id) and not mgr.set_timeout(s.id, None)
    assert list(mgr.ids()) == [] and list(mgr.sessions()) == [] and mgr.find(n=1) == []
    again = mgr.create({"n": 2}, session_id=s.id)
    assert again.version == 1 and mgr.get(s.id).data == {"n": 2}  # type: ignore[union-attr]


def test_cleanup_counts_exactly(kit: Kit) -> None:
    mgr = kit.open()
    short = {mgr.create({"i": i}, timeout_ms=STEP_MS).id for i in range(25)}
    long = {mgr.create({"i": i}, timeout_ms=3 * STEP_MS).id for i in range(10)}
    never = {mgr.create({"i": i}, timeout_ms=None).id for i in range(5)}
    kit.clock.advance(STEP_MS + 1)
    assert mgr.cleanup_expired() == 25
    assert mgr.cleanup_expired() == 0
    assert set(mgr.ids()) == long | never and not short & set(mgr.list_utf8_ids())
    kit.clock.advance(10**9)
    assert mgr.cleanup_expired() == 10
    assert set(mgr.ids()) == never and len(mgr) == 5


def test_access_postpones_expiry(kit: Kit) -> None:
    mgr = kit.open()
    by_get = mgr.create({}, timeout_ms=2 * STEP_MS).id
    by_touch = mgr.create({}, timeout_ms=2 * STEP_MS).id
    idle = mgr.create({}, timeout_ms=2 * STEP_MS).id
    for _ in range(3):
        kit.clock.advance(STEP_MS + 1)
        mgr.get(by_get)
        mgr.touch(by_touch)
    assert by_get in mgr and by_touch in mgr and idle not in mgr
    assert mgr.cleanup_expired() == 1


def test_set_timeout_moves_the_deadline(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({}, timeout_ms=STEP_MS)
    assert mgr.set_timeout(s.id, 5 * STEP_MS)
    kit.clock.advance(2 * STEP_MS)
    assert s.id in mgr and mgr.cleanup_expired() == 0
    assert mgr.set_timeout(s.id, STEP_MS)
    assert s.id not in mgr and mgr.cleanup_expired() == 1


kit_module(globals(), "expiry")
