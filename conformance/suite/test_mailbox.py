"""Priority mailboxes (DESIGN §7): lanes, exactly-once delivery, cancel."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager

import pytest

import torpor
from torpor.conformance._kit import STEP_MS, Kit
from torpor.conformance._marks import kit_module
from torpor.conformance.helpers import blocked_consumer


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


@contextmanager
def _busy_switching() -> Iterator[None]:
    """Switch threads as often as CPython allows, so races show in a few rounds."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


class _SlowEngine:
    """An extension plugin that hands the GIL to other threads after every fetch and
    write, as a network round trip would: it widens the window between a check or a
    write and what depends on it, so check-then-act races show within a few rounds."""

    @staticmethod
    def _slowly() -> Generator[None, object, object]:
        result = yield
        time.sleep(0)
        return result

    @torpor.hookimpl(wrapper=True)
    def torpor_fetch(self, session_id: str) -> Generator[None, object, object]:
        return (yield from self._slowly())

    @torpor.hookimpl(wrapper=True)
    def torpor_delete(self, session_id: str) -> Generator[None, object, object]:
        return (yield from self._slowly())

    @torpor.hookimpl(wrapper=True)
    def torpor_transact(self, session_id: str, fn: object) -> Generator[None, object, object]:
        return (yield from self._slowly())


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
    # DESIGN §11: a send racing a cancel either lands before the cancel (and is
    # discarded with the session) or is refused; it never waits for the next session.
    mgr = kit.open(plugins=[_SlowEngine()])
    refused = 0
    with _busy_switching():
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
    mgr = kit.open(plugins=[_SlowEngine()])
    with _busy_switching():
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
    mgr = kit.open(plugins=[_SlowEngine()])
    with _busy_switching():
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
