"""Several processes over one storage (capability MULTI_PROCESS)."""

from __future__ import annotations

import pytest

from torpor.conformance._kit import Kit
from torpor.conformance._marks import kit_module


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


kit_module(globals(), "multiprocess", "multi_process")
