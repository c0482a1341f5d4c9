"""Several processes over one storage (capability MULTI_PROCESS).

Whatever a backend keeps per process (a read cache, a count, a sequence number, a
cancel mark) must agree with what other processes do to the storage: each test here
lets a manager hold some state, changes the storage from another process, and checks
that the first manager sees the change at once.
"""

from __future__ import annotations

from typing import Any

import pytest

import torpor
from torpor.conformance._kit import Kit
from torpor.conformance._marks import kit_module
from torpor.conformance.helpers import expect_returns


def _needs_spawn(kit: Kit) -> None:
    if not kit.target.spawnable:
        pytest.skip("missing: the target is a build= callable, which cannot reach a process")


@pytest.mark.torpor_requires("atomic_update")
def test_no_lost_updates_from_4_processes(kit: Kit) -> None:
    _needs_spawn(kit)
    mgr = kit.open()
    ids = [mgr.create({"n": 0}, timeout_ms=None).id for _ in range(10)]
    results = kit.in_processes(4, "increment", ids=ids, rounds=2000)
    assert [r["done"] for r in results] == [2000] * 4
    assert sum(mgr.peek(i).data["n"] for i in ids) == 8000  # type: ignore[union-attr]
    assert [mgr.peek(i).data["n"] for i in ids] == [800] * 10  # type: ignore[union-attr]


@pytest.mark.torpor_requires("shared_mailbox")
def test_messages_cross_processes_once_priority_first(kit: Kit) -> None:
    _needs_spawn(kit)
    mgr = kit.open()
    s = mgr.create({}, timeout_ms=None)
    normal = [{"n": i} for i in range(300)]
    urgent = [{"p": i} for i in range(20)]
    for message in normal:
        mgr.send(s.id, message)
    for message in urgent:
        mgr.send(s.id, message, priority=True)
    results = kit.in_processes(3, "consume", session_id=s.id, idle_s=1.0)
    parts = [r["received"] for r in results]
    everything = [m for part in parts for m in part]
    assert len(everything) == len(normal) + len(urgent), "lost or duplicated messages"
    assert sorted(map(str, everything)) == sorted(map(str, normal + urgent))
    for part in parts:  # within each consumer, no priority message after a normal one
        kinds = ["p" in m for m in part]
        assert kinds == sorted(kinds, reverse=True)


@pytest.mark.torpor_requires("shared_mailbox")
def test_a_message_sent_by_another_process_arrives(kit: Kit) -> None:
    _needs_spawn(kit)
    mgr = kit.open()
    s = mgr.create({}, timeout_ms=None)
    kit.in_processes(1, "send", session_id=s.id, messages=["from afar"], priority=True)
    assert mgr.receive(s.id, timeout=5) == ["from afar"]


def _data(session: torpor.Session | None) -> dict[str, Any] | None:
    return None if session is None else session.data


def test_another_processs_writes_are_seen_at_once(kit: Kit) -> None:
    _needs_spawn(kit)
    mgr = kit.open()
    mgr.create({"v": 1}, session_id="changed", timeout_ms=None)
    mgr.create({"v": 1}, session_id="doomed", timeout_ms=None)
    # Read everything first, so that whatever this process keeps is warm.
    for sid in ("changed", "doomed"):
        assert mgr.peek(sid) is not None and mgr.get(sid) is not None and sid in mgr
    assert mgr.peek("born-1") is None and mgr.get("born-1") is None and "born-1" not in mgr
    assert len(mgr) == 2 and sorted(mgr.ids()) == ["changed", "doomed"]
    assert mgr.stats().sessions == 2

    (result,) = kit.in_processes(
        1,
        "apply",
        steps=[
            ["update", "changed", {"v": 2}],
            ["delete", "doomed"],
            ["create", "born-1", {"v": 3}],
            ["create", "born-2", {"v": 4}],
        ],
    )
    assert result["outcomes"] == [
        {"returned": {"v": 2}},
        {"returned": True},
        {"returned": "born-1"},
        {"returned": "born-2"},
    ], result

    other = "after another process's writes"
    expect_returns({"v": 2}, lambda: _data(mgr.peek("changed")), what=f"peek('changed') {other}")
    expect_returns({"v": 2}, lambda: _data(mgr.get("changed")), what=f"get('changed') {other}")
    expect_returns(None, mgr.peek, "doomed", what=f"peek('doomed') {other}")
    expect_returns(None, mgr.get, "doomed", what=f"get('doomed') {other}")
    expect_returns(False, lambda: "doomed" in mgr, what=f"'doomed' in mgr {other}")
    expect_returns({"v": 3}, lambda: _data(mgr.peek("born-1")), what=f"peek('born-1') {other}")
    expect_returns(True, lambda: "born-1" in mgr, what=f"'born-1' in mgr {other}")
    expect_returns(3, len, mgr, what=f"len(mgr) {other}")
    expect_returns(
        ["born-1", "born-2", "changed"], lambda: sorted(mgr.ids()), what=f"sorted(ids()) {other}"
    )
    expect_returns(3, lambda: mgr.stats().sessions, what=f"stats().sessions {other}")
    # And this process writes on top of the other's writes, not of what it saw before.
    updated = mgr.update("changed", lambda d: {"v": d["v"] + 1})
    assert (updated.data, updated.version) == ({"v": 3}, 3), updated


@pytest.mark.torpor_requires("shared_mailbox")
def test_sends_from_several_processes_arrive_once_in_lane_order(kit: Kit) -> None:
    _needs_spawn(kit)
    mgr = kit.open()
    s = mgr.create({}, timeout_ms=None)
    mgr.send(s.id, ["here", 0, False])  # before every other sender: first of its lane
    senders = kit.in_processes(3, "send_numbered", session_id=s.id, how_many=30, priority_every=3)
    for i in range(1, 11):  # after them: last of the normal lane
        mgr.send(s.id, ["here", i, False])
    got: list[list[Any]] = []
    while batch := mgr.receive(s.id, max_messages=500):
        got.extend(batch)

    sent = [["here", i, False] for i in range(11)] + [
        [r["sender"], i, i % 3 == 2] for r in senders for i in range(30)
    ]
    assert sorted(map(repr, got)) == sorted(map(repr, sent)), "lost or duplicated messages"
    lanes = [m[2] for m in got]
    assert lanes == sorted(lanes, reverse=True), "a normal message overtook a priority one"
    for sender in ["here", *(r["sender"] for r in senders)]:
        for priority in (True, False):
            numbers = [m[1] for m in got if m[0] == sender and m[2] is priority]
            assert numbers == sorted(numbers), f"lane not FIFO for sender {sender}: {numbers}"
    normal = [m for m in got if not m[2]]
    assert normal[0] == ["here", 0, False] and normal[-10:] == sent[1:11], normal


@pytest.mark.torpor_requires("shared_mailbox")
def test_a_removal_reaches_a_consumer_blocked_in_another_process(kit: Kit) -> None:
    _needs_spawn(kit)
    mgr = kit.open()
    cancelled = mgr.create({}, timeout_ms=None)
    deleted = mgr.create({}, timeout_ms=None)
    waiting_cancel = kit.start("blocked_receive", session_id=cancelled.id)
    waiting_delete = kit.start("blocked_receive", session_id=deleted.id)
    waiting_cancel.wait_for("blocked")
    waiting_delete.wait_for("blocked")
    assert mgr.cancel(cancelled.id) and mgr.delete(deleted.id)
    assert waiting_cancel.result() == {"raised": ["SessionCancelled"]}, "receive after cancel"
    assert waiting_delete.result() == {"raised": ["SessionNotFound"]}, "receive after delete"


kit_module(globals(), "multiprocess", "multi_process")
