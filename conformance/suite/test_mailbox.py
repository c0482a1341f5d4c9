"""Priority mailboxes (DESIGN §7): lanes, exactly-once delivery, cancel."""

from __future__ import annotations

import threading

import pytest

import torpor
from torpor.conformance._kit import Kit, blocked_consumer
from torpor.conformance._marks import kit_module


def test_priority_first_and_fifo_per_lane(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({})
    for i in range(6):
        mgr.send(s.id, {"n": i})
    for p in ("p0", "p1", "p2"):
        mgr.send(s.id, p, priority=True)
    assert mgr.receive(s.id, max_messages=4) == ["p0", "p1", "p2", {"n": 0}]
    mgr.send(s.id, "late-priority", priority=True)
    assert mgr.receive(s.id, max_messages=2) == ["late-priority", {"n": 1}]
    assert mgr.receive(s.id, max_messages=100) == [{"n": i} for i in range(2, 6)]
    assert mgr.receive(s.id) == []


def test_priority_overtakes_a_backlog(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({})
    for i in range(20_000):
        mgr.send(s.id, i)
    mgr.send(s.id, {"control": "cancel"}, priority=True)
    assert mgr.receive(s.id) == [{"control": "cancel"}]
    assert mgr.receive(s.id, max_messages=3) == [0, 1, 2]


def test_exactly_once_with_4_consumer_threads(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({})
    total = 2000
    for i in range(total):
        mgr.send(s.id, i, priority=i % 5 == 0)
    parts: list[list[int]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def consumer(k: int) -> None:
        parts[k].extend(mgr.receive(s.id, timeout=10))
        start.wait()  # every consumer holds one message: the rest is contested
        while batch := mgr.receive(s.id, max_messages=5):
            parts[k].extend(batch)

    threads = [threading.Thread(target=consumer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = sorted(m for part in parts for m in part)
    assert everything == list(range(total)), "a message was lost or delivered twice"
    assert all(part for part in parts)


def test_cancel_wakes_a_blocked_consumer(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({})
    mgr.send(s.id, "will be dropped")
    assert mgr.receive(s.id) == ["will be dropped"]
    thread, outcome = blocked_consumer(mgr, s.id)
    assert mgr.cancel(s.id) is True
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], torpor.SessionCancelled)
    assert s.id not in mgr and mgr.cancel(s.id) is False


def test_cancel_discards_pending_messages(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({}, session_id="recycled")
    mgr.send(s.id, "stale")
    assert mgr.cancel(s.id)
    mgr.create({}, session_id="recycled")
    assert mgr.receive("recycled") == []


def test_mailbox_errors(kit: Kit) -> None:
    mgr = kit.open()
    with pytest.raises(torpor.SessionNotFound):
        mgr.send("nobody", "x")
    with pytest.raises(torpor.SessionNotFound):
        mgr.receive("nobody")
    s = mgr.create({})
    with pytest.raises(torpor.SerializationError):
        mgr.send(s.id, {"x": {1, 2}})
    assert mgr.receive(s.id) == []


kit_module(globals(), "mailbox")
