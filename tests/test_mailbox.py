"""Priority mailboxes and cancel (DESIGN §7): what the conformance kit does not check
(tests/test_kit_catches.py runs the kit on ets_like, the fallback-only backend and
lmdb)."""

from __future__ import annotations

import pytest

import torpor
from torpor import SessionCancelled, SessionNotFound
from torpor.conformance.helpers import blocked_consumer


def test_priority_first_fifo_per_lane(mgr: torpor.Manager) -> None:
    s = mgr.create({})
    for i in range(5):
        mgr.send(s.id, {"n": i})
    mgr.send(s.id, "p1", priority=True)
    mgr.send(s.id, "p2", priority=True)
    assert mgr.pending(s.id) == 7
    assert mgr.receive(s.id, max_messages=3) == ["p1", "p2", {"n": 0}]
    assert mgr.receive(s.id, max_messages=10) == [{"n": i} for i in range(1, 5)]
    assert mgr.receive(s.id) == []


def test_cancel_wakes_a_blocked_receive(mgr: torpor.Manager) -> None:
    s = mgr.create({})
    thread, outcome = blocked_consumer(mgr, s.id)
    assert mgr.cancel(s.id) is True
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], SessionCancelled)
    assert s.id not in mgr
    with pytest.raises(SessionNotFound):
        mgr.receive(s.id)
