"""Priority mailboxes and cancel (DESIGN §7)."""

# Exactly-once delivery to 4 concurrent consumers is a conformance-kit
# test; tests/test_kit_catches.py runs the whole kit against ets_like and the
# fallback-only backend.

from __future__ import annotations

import threading

import pytest

import torpor
from torpor import SerializationError, SessionCancelled, SessionNotFound
from torpor.conformance.helpers import blocked_consumer, wait_for_waiter


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


def test_priority_overtakes_a_large_backlog(mgr: torpor.Manager) -> None:
    s = mgr.create({})
    for i in range(100_000):
        mgr.send(s.id, i)
    mgr.send(s.id, "stop", priority=True)
    assert mgr.receive(s.id) == ["stop"]
    assert mgr.pending(s.id) == 100_000


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


def test_delete_wakes_a_blocked_receive_with_not_found(mgr: torpor.Manager) -> None:
    s = mgr.create({})
    thread, outcome = blocked_consumer(mgr, s.id)
    mgr.delete(s.id)
    thread.join(timeout=10)
    assert len(outcome) == 1 and isinstance(outcome[0], SessionNotFound)


def test_cancel_discards_pending_messages(mgr: torpor.Manager) -> None:
    s = mgr.create({}, session_id="c")
    mgr.send(s.id, 1)
    assert mgr.cancel(s.id)
    assert not mgr.cancel(s.id)
    again = mgr.create({}, session_id="c")
    assert mgr.receive(again.id) == []


def test_send_errors(mgr: torpor.Manager) -> None:
    with pytest.raises(SessionNotFound):
        mgr.send("missing", "x")
    s = mgr.create({})
    with pytest.raises(SerializationError):
        mgr.send(s.id, {"bad": {1}})
    assert mgr.pending(s.id) == 0
    with pytest.raises(torpor.InvalidArgument):
        mgr.receive(s.id, max_messages=0)


def test_receive_waits_for_a_message(mgr: torpor.Manager) -> None:
    s = mgr.create({})
    got: list[object] = []
    t = threading.Thread(target=lambda: got.extend(mgr.receive(s.id, timeout=30)))
    t.start()
    wait_for_waiter(mgr, s.id)
    mgr.send(s.id, "hello")
    t.join(timeout=10)
    assert got == ["hello"]
