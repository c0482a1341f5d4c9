"""Processes that share nothing but the backend's options (capability DISTRIBUTED).

The kit cannot start a second host, but it can take away everything a second host
would not share.  Each manager here runs in a process of its own (a fresh interpreter,
so its own connection pool), in its own empty working directory with its own ``HOME``
and ``TMPDIR``, with a clock of its own that the test moves separately; ``{storage}``
in the options becomes the same *relative* name in every process.  A backend that keeps
its state on a server shares it through the server; one that keeps it in local files
opens a different store in each process and fails here, whatever it does in the
multiprocess area.

Every test drives three long-lived peers (``A``, ``B``, ``C``: see
``torpor.conformance._child.peers``) step by step, so a write in one is checked in
the others while all three stay open.
"""

from __future__ import annotations

from typing import Any

import pytest

from torpor.conformance._child import Peer, peers
from torpor.conformance._kit import Kit
from torpor.conformance._marks import kit_module

ROUNDS = 300
"""Increments per process in the atomicity test: 900 updates of 6 sessions from 3
processes, a fraction of a second on a local server."""


def _needs_spawn(kit: Kit) -> None:
    if not kit.target.spawnable:
        pytest.skip("missing: the target is a build= callable, which cannot reach a process")


def _view(data: dict[str, Any], version: int = 1, hibernated: bool = False) -> dict[str, Any]:
    """What a ``peek_view``/``get_view`` step gives for a live session."""
    return {"data": data, "version": version, "hibernated": hibernated}


def _all_see(group: list[Peer], expected: Any, step: str, *args: Any) -> None:
    """Every peer answers ``step(*args)`` with ``expected``."""
    answers = {peer.name: peer.ask(step, *args) for peer in group}
    wrong = {name: answer for name, answer in answers.items() if answer != expected}
    call = f"{step}({', '.join(map(repr, args))})"
    assert not wrong, f"{call} should give {expected!r}; it gave {wrong} (by process)"


def test_sessions_written_in_one_process_are_seen_in_the_others_at_once(kit: Kit) -> None:
    _needs_spawn(kit)
    with peers(kit, 3) as group:
        a, b, c = group
        assert a.ask("create", "alpha", {"v": 1}) == "alpha"
        assert a.ask("create", "beta", {"v": 1}, 3_600_000) == "beta"
        assert a.ask("update", "alpha", {"v": 2}) == {"v": 2}
        others = [b, c]
        _all_see(others, _view({"v": 2}, 2), "peek_view", "alpha")
        _all_see(others, _view({"v": 1}), "get_view", "beta")
        _all_see(others, True, "contains", "alpha")
        _all_see(others, False, "contains", "gamma")
        _all_see(others, None, "peek_view", "gamma")
        _all_see(others, 2, "len")
        _all_see(others, ["alpha", "beta"], "ids")
        _all_see(others, {"sessions": 2, "active": 2, "hibernated": 0}, "stats")

        # B and C write on top of A's writes, and every process sees theirs at once.
        assert b.ask("update", "alpha", {"w": 3}) == {"v": 2, "w": 3}
        assert c.ask("delete", "beta") is True
        assert c.ask("create", "gamma", {"v": 4}) == "gamma"
        assert b.ask("delete", "beta") is False, "B deleted what C had deleted already"
        alpha = _view({"v": 2, "w": 3}, 3)
        _all_see(group, alpha, "peek_view", "alpha")
        _all_see(group, None, "get_view", "beta")
        _all_see(group, False, "contains", "beta")
        _all_see(group, _view({"v": 4}), "get_view", "gamma")
        _all_see(group, 2, "len")
        _all_see(group, ["alpha", "gamma"], "ids")
        _all_see(group, {"sessions": 2, "active": 2, "hibernated": 0}, "stats")


@pytest.mark.torpor_requires("atomic_update")
def test_updates_and_creates_from_3_processes_are_atomic(kit: Kit) -> None:
    _needs_spawn(kit)
    with peers(kit, 3) as group:
        a = group[0]
        ids = [a.ask("create", f"counter-{i}", {"n": 0}) for i in range(6)]
        for peer in group:  # all told before any is awaited: the updates overlap
            peer.tell("increment", ids, ROUNDS)
        done = [peer.reply() for peer in group]
        assert done == [{"returned": {"done": ROUNDS}}] * 3, done
        counts = {peer.name: [peer.ask("peek", i)["n"] for i in ids] for peer in group}
        exact = [3 * ROUNDS // len(ids)] * len(ids)
        assert counts == {peer.name: exact for peer in group}, f"lost updates: {counts}"

        # One id created by every process at once: exactly one create wins.
        for peer in group:
            peer.tell("create", "contested", {"by": peer.name})
        outcomes = {peer.name: peer.reply() for peer in group}
        winners = [name for name, o in outcomes.items() if o.get("returned") == "contested"]
        losers = [name for name, o in outcomes.items() if o.get("raised") == "SessionExists"]
        assert len(winners) == 1 and len(losers) == 2, outcomes
        winner = _view({"by": winners[0]})
        _all_see(group, winner, "peek_view", "contested")


def test_a_sweep_in_one_process_removes_and_hibernates_for_all(kit: Kit) -> None:
    _needs_spawn(kit)
    start = kit.clock()
    with peers(kit, 3) as group:
        a, b, c = group
        short = [a.ask("create", f"short-{i}", {"i": i}, 60_000) for i in range(4)]
        idle = [a.ask("create", f"idle-{i}", {"i": i}) for i in range(3)]
        _all_see(group, 7, "len")

        # Only B's clock is past the timeouts: B's sweep removes them for everyone,
        # A and C included, whose clocks say they are still alive.
        b.ask("clock", start + 60_001)
        assert b.ask("cleanup_expired") == len(short)
        for sid in short:
            _all_see(group, None, "peek_view", sid)
            _all_see(group, False, "contains", sid)
        _all_see(group, len(idle), "len")
        _all_see(group, idle, "ids")
        _all_see(group, {"sessions": 3, "active": 3, "hibernated": 0}, "stats")
        c.ask("clock", start + 60_001)
        assert c.ask("cleanup_expired") == 0, "a second process's sweep found work left"

        # C hibernates what has been idle; A and B see it hibernated, data intact.
        c.ask("clock", start + 120_000)
        assert c.ask("hibernate_idle", 100_000) == len(idle)
        for i, sid in enumerate(idle):
            _all_see(group, _view({"i": i}, hibernated=True), "peek_view", sid)
        _all_see(group, {"sessions": 3, "active": 0, "hibernated": 3}, "stats")
        assert b.ask("hibernate_idle", 1) == 0, "hibernated sessions hibernated again"

        # A wakes one with a read; everyone sees it awake, the others still asleep.
        a.ask("clock", start + 120_000)
        assert a.ask("get_view", "idle-0") == _view({"i": 0})
        _all_see(group, _view({"i": 0}), "peek_view", "idle-0")
        _all_see(group, {"sessions": 3, "active": 1, "hibernated": 2}, "stats")
        _all_see(group, 3, "len")


@pytest.mark.torpor_requires("shared_mailbox")
def test_mail_sent_from_two_processes_is_received_once_in_a_third(kit: Kit) -> None:
    _needs_spawn(kit)
    with peers(kit, 3) as group:
        a, b, c = group
        sid = a.ask("create", "inbox", {})
        for sender in (a, b):  # both sending at once
            sender.tell("send_numbered", sid, 30, 3)
        senders = [sender.returned("send_numbered")["sender"] for sender in (a, b)]
        got = c.ask("drain", sid)

        sent = [[s, i, i % 3 == 2] for s in senders for i in range(30)]
        assert sorted(map(repr, got)) == sorted(map(repr, sent)), "lost or duplicated messages"
        lanes = [m[2] for m in got]
        assert lanes == sorted(lanes, reverse=True), "a normal message overtook a priority one"
        for s in senders:
            for priority in (True, False):
                numbers = [m[1] for m in got if m[0] == s and m[2] is priority]
                assert numbers == sorted(numbers), f"lane not FIFO for sender {s}: {numbers}"
        _all_see(group, [], "drain", sid)


@pytest.mark.torpor_requires("shared_mailbox")
def test_consumers_blocked_in_one_process_are_woken_by_another(kit: Kit) -> None:
    _needs_spawn(kit)
    with peers(kit, 3) as group:
        a, b, c = group
        a.ask("create", "mail", {})
        a.ask("create", "doomed", {})
        b.tell("receive_blocked", "mail")
        c.tell("receive_blocked", "doomed")
        b.wait_for("blocked")
        c.wait_for("blocked")
        a.ask("send", "mail", "hello from A")
        assert b.reply() == {"returned": {"raised": [], "received": ["hello from A"]}}, (
            "a message sent in A to a consumer blocked in B"
        )
        assert a.ask("cancel", "doomed") is True
        assert c.reply() == {"returned": {"raised": ["SessionCancelled"], "received": []}}, (
            "a cancel in A of a session a consumer in C is blocked on"
        )
        _all_see(group, False, "contains", "doomed")


kit_module(globals(), "distributed", "distributed")
