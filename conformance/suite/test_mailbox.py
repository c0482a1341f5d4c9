"""Priority mailboxes (docs/contract.md §7): lanes, exactly-once delivery, cancel."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Generator

import pytest

import torpor
from torpor.conformance._kit import STEP_MS, Kit
from torpor.conformance._marks import kit_module
from torpor.conformance.helpers import (
    RoundTrips,
    blocked_consumer,
    busy_switching,
    expect_raises,
    expect_returns,
    wait_for_waiter,
)


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


def test_priority_overtakes_a_backlog_at_no_extra_cost(kit: Kit) -> None:
    mgr = kit.open()
    busy = mgr.create({}).id
    idle = mgr.create({}).id
    for i in range(20_000):
        mgr.send(busy, i)
    mgr.send(busy, {"control": "cancel"}, priority=True)
    expect_returns([{"control": "cancel"}], mgr.receive, busy)
    # docs/contract.md §7: a priority receive costs the same behind 20,000 normal messages as in
    # an empty mailbox (healthy backends measure 0.5x to 1x; a scan of the backlog 50x).
    ratio = _priority_receive_cost_ratio(mgr, busy, idle)
    assert ratio < 10, (
        f"a priority receive behind 20,000 normal messages costs {ratio:.1f}x one in an "
        "empty mailbox: the backlog is scanned"
    )
    expect_returns([0, 1, 2], mgr.receive, busy, max_messages=3)


def _priority_receive_cost_ratio(mgr: torpor.Manager, busy: str, idle: str) -> float:
    """Median time of a priority receive on ``busy`` over the same on ``idle``, timed
    alternately in one run, so that the machine's load weighs on both alike."""
    timings: dict[str, list[float]] = {busy: [], idle: []}
    for round_ in range(15):
        for sid in (busy, idle) if round_ % 2 else (idle, busy):
            mgr.send(sid, round_, priority=True)
            start = time.perf_counter()
            taken = mgr.receive(sid)
            timings[sid].append(time.perf_counter() - start)
            assert taken == [round_], taken
    return statistics.median(timings[busy]) / statistics.median(timings[idle])


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


def test_delete_discards_pending_messages(kit: Kit) -> None:
    mgr = kit.open()
    mgr.create({}, session_id="deleted")
    mgr.send("deleted", "stale")
    mgr.send("deleted", "stale-priority", priority=True)
    expect_returns(True, mgr.delete, "deleted")
    mgr.create({}, session_id="deleted")
    expect_returns(0, mgr.pending, "deleted", what="pending() of the id created again")
    expect_returns([], mgr.receive, "deleted", max_messages=10, what="receive() of the new one")


@pytest.mark.parametrize("removal", ["delete", "expiry"])
def test_a_removal_wakes_a_blocked_consumer_with_session_not_found(kit: Kit, removal: str) -> None:
    mgr = kit.open()
    s = mgr.create({}, timeout_ms=STEP_MS)
    thread, outcome = blocked_consumer(mgr, s.id)
    if removal == "delete":
        expect_returns(True, mgr.delete, s.id)
    else:
        kit.clock.advance(STEP_MS + 1)
        expect_returns(1, mgr.cleanup_expired)
    thread.join(timeout=10)
    assert not thread.is_alive(), f"a consumer blocked on a session gone by {removal} slept on"
    assert len(outcome) == 1 and isinstance(outcome[0], torpor.SessionNotFound), outcome


def test_a_receive_with_a_timeout_returns_what_is_queued_at_once(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({})
    mgr.send(s.id, "a")
    mgr.send(s.id, "b", priority=True)
    # Two of the five asked for are queued: they are returned now, not kept back
    # until five arrive or the timeout passes (healthy backends do not wait at all).
    expect_returns(["b", "a"], mgr.receive, s.id, max_messages=5, timeout=1.0)
    # A consumer already waiting gets the first message as it arrives.
    outcome: list[object] = []

    def consume() -> None:
        try:
            outcome.append(mgr.receive(s.id, max_messages=5, timeout=30))
        except Exception as exc:  # handed to the test
            outcome.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    wait_for_waiter(mgr, s.id)
    mgr.send(s.id, "c")
    consumer.join(timeout=10)
    assert not consumer.is_alive(), "a waiting receive(max_messages=5) kept waiting for more"
    assert outcome == [["c"]], outcome
    expect_returns(0, mgr.pending, s.id)


def test_pending_counts_both_lanes(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({}).id
    urgent_only = mgr.create({}).id
    expect_returns(0, mgr.pending, s, what="pending() of an empty mailbox")
    for i in range(3):
        mgr.send(s, i)
    mgr.send(s, "p0", priority=True)
    mgr.send(s, "p1", priority=True)
    expect_returns(5, mgr.pending, s, what="pending() with 3 normal and 2 priority queued")
    expect_returns(["p0"], mgr.receive, s)
    expect_returns(4, mgr.pending, s, what="pending() after taking 1 of 2 priority")
    expect_returns(["p1", 0], mgr.receive, s, max_messages=2)
    expect_returns(2, mgr.pending, s, what="pending() with only normal mail left")
    mgr.send(urgent_only, "u0", priority=True)
    mgr.send(urgent_only, "u1", priority=True)
    expect_returns(2, mgr.pending, urgent_only, what="pending() with only priority mail queued")
    expect_returns(["u0", "u1"], mgr.receive, urgent_only, max_messages=5)
    expect_returns(0, mgr.pending, urgent_only, what="pending() once everything is taken")


def test_hibernation_keeps_queued_mail(kit: Kit) -> None:
    # docs/contract.md §5 and §7: hibernation changes how a session is kept, not what
    # it holds; its mailbox stays, in both lanes and in order, asleep and once woken.
    mgr = kit.open()
    s = mgr.create({}, timeout_ms=None).id
    mgr.send(s, "a")
    mgr.send(s, "p0", priority=True)
    mgr.send(s, "b")
    kit.clock.advance(2 * STEP_MS)
    expect_returns(1, mgr.hibernate_idle, STEP_MS)
    expect_returns(3, mgr.pending, s, what="pending() of a session just hibernated")
    mgr.send(s, "c")
    mgr.send(s, "p1", priority=True)
    expect_returns(5, mgr.pending, s, what="pending() after sending to a hibernated session")
    woken = mgr.get(s)
    assert woken is not None and not woken.hibernated, woken
    expect_returns(["p0", "p1", "a", "b", "c"], mgr.receive, s, max_messages=10)
    mgr.send(s, "d")
    kit.clock.advance(2 * STEP_MS)
    expect_returns(1, mgr.hibernate_idle, STEP_MS, what="hibernate_idle() again")
    expect_returns(["d"], mgr.receive, s, max_messages=10, what="receive() while hibernated")


def test_a_huge_finite_timeout_waits_for_the_next_message(kit: Kit) -> None:
    # docs/contract.md §7: a huge finite timeout is waited in slices, never handed
    # whole to a wait that overflows; the receive waits until mail comes.
    mgr = kit.open()
    s = mgr.create({}).id
    received: list[list[object]] = []
    consumer, raised = blocked_consumer(mgr, s, timeout=1e300, received=received)
    mgr.send(s, "wake up")
    consumer.join(timeout=10)
    assert not consumer.is_alive(), "a consumer waiting with timeout=1e300 missed the message"
    assert (received, raised) == ([["wake up"]], []), (received, raised)


def test_mailbox_errors(kit: Kit) -> None:
    mgr = kit.open()
    expect_raises(torpor.SessionNotFound, mgr.send, "nobody", "x")
    expect_raises(torpor.SessionNotFound, mgr.receive, "nobody")
    s = mgr.create({})
    expect_raises(torpor.SerializationError, mgr.send, s.id, {"x": {1, 2}})
    expect_returns([], mgr.receive, s.id, what="receive() after a refused send")


class _Pause:
    """An extension plugin that holds one chosen thread right after its next fetch,
    until the test releases it: a race replayed in a chosen order, no sleeping."""

    def __init__(self) -> None:
        self.thread: int | None = None
        self.paused = threading.Event()
        self.release = threading.Event()

    def _hold(self) -> Generator[None, object, object]:
        result = yield
        if threading.get_ident() == self.thread:
            self.thread = None
            self.paused.set()
            self.release.wait(30)
        return result

    @torpor.hookimpl(wrapper=True)
    def torpor_fetch(self, session_id: str) -> Generator[None, object, object]:
        return (yield from self._hold())

    def run_held(self, body: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
        """Run ``body`` in a thread that is held after its first fetch."""
        outcome: list[object] = []

        def run() -> None:
            self.thread = threading.get_ident()
            try:
                outcome.append(body())
            except Exception as exc:  # handed to the test
                outcome.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        assert self.paused.wait(30), "the held call never reached the backend"
        return thread, outcome


def _race(*bodies: Callable[[], object]) -> None:
    start = threading.Barrier(len(bodies))
    errors: list[BaseException] = []

    def run(body: Callable[[], object]) -> None:
        start.wait()
        try:
            body()
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors


def test_mail_never_reaches_a_later_session_with_the_same_id(kit: Kit) -> None:
    # docs/contract.md §7: a send racing a cancel either lands before the cancel (and is
    # discarded with the session) or is refused; it never waits for the next session.
    mgr = kit.open(plugins=[RoundTrips()])
    refused = 0
    with busy_switching():
        for round_ in range(150):
            mgr.create({}, session_id="m")

            def send(round_: int = round_) -> None:
                nonlocal refused
                try:
                    mgr.send("m", ["old", round_])
                except torpor.SessionNotFound:
                    refused += 1

            _race(send, lambda: mgr.cancel("m"))
            mgr.create({}, session_id="m")
            mgr.send("m", ["new", round_])
            assert mgr.receive("m", max_messages=10) == [["new", round_]], round_
            assert mgr.delete("m")
    assert 0 <= refused <= 150


def test_a_removal_never_drops_the_next_sessions_mail(kit: Kit) -> None:
    # The reverse race: the old session's cleanup must not discard what was sent to
    # the new session created right after it.
    mgr = kit.open(plugins=[RoundTrips()])
    with busy_switching():
        for round_ in range(150):
            mgr.create({}, session_id="r")

            def recreate_and_send(round_: int = round_) -> None:
                while True:
                    try:
                        mgr.create({}, session_id="r")
                        break
                    except torpor.SessionExists:
                        continue
                mgr.send("r", ["new", round_])

            _race(lambda: mgr.cancel("r"), recreate_and_send)
            assert mgr.receive("r", max_messages=10) == [["new", round_]], round_
            assert mgr.delete("r")


def test_expiry_discards_mail_with_the_session(kit: Kit) -> None:
    mgr = kit.open()
    mgr.create({}, session_id="e", timeout_ms=STEP_MS)
    mgr.send("e", "stale")
    kit.clock.advance(STEP_MS + 1)
    mgr.create({}, session_id="e")  # takes over the expired, unswept record
    assert mgr.pending("e") == 0 and mgr.receive("e") == []
    mgr.send("e", "fresh")
    mgr.set_timeout("e", STEP_MS)
    kit.clock.advance(STEP_MS + 1)
    assert mgr.cleanup_expired() == 1
    mgr.create({}, session_id="e")
    assert mgr.receive("e") == []


def test_close_wakes_a_blocked_consumer_with_manager_closed(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({})
    thread, outcome = blocked_consumer(mgr, s.id)
    mgr.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], torpor.ManagerClosed), outcome


def test_a_late_receiver_of_an_old_session_leaves_the_new_ones_mail_alone(kit: Kit) -> None:
    pause = _Pause()
    mgr = kit.open(plugins=[pause])
    mgr.create({}, session_id="s")
    # The receiver has seen the first session alive, and is held there...
    thread, outcome = pause.run_held(lambda: mgr.receive("s", timeout=0))
    mgr.delete("s")  # ...while the id is deleted, created again and sent to.
    mgr.create({}, session_id="s")
    mgr.send("s", "for-the-new-session")
    pause.release.set()
    thread.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], torpor.SessionNotFound), outcome
    assert mgr.pending("s") == 1
    assert mgr.receive("s") == ["for-the-new-session"]


def test_a_waiter_learns_of_a_cancel_even_if_the_id_is_reused_at_once(kit: Kit) -> None:
    # The id is created again and sent to while the cancel is still finishing: the
    # waiter on the cancelled session must still hear "cancelled", the new one's mail
    # must stay.
    mgr = kit.open(plugins=[RoundTrips()])
    with busy_switching():
        for round_ in range(40):
            s = mgr.create({}, session_id="c")
            waiter, caught = blocked_consumer(mgr, s.id)

            def reuse(round_: int = round_) -> None:
                while True:
                    try:
                        mgr.create({}, session_id="c")
                        break
                    except torpor.SessionExists:
                        continue
                mgr.send("c", round_)

            _race(lambda: mgr.cancel("c"), reuse)
            waiter.join(30)
            assert len(caught) == 1 and isinstance(caught[0], torpor.SessionCancelled), caught
            assert mgr.receive("c", max_messages=5) == [round_]
            mgr.delete("c")


kit_module(globals(), "mailbox")
