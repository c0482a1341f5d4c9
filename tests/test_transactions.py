"""The manager's side of multi-session transactions (core/_transaction.py).

The kit's ``transactions`` area checks what a backend must do; these check what the
manager does around it, on ``LockedTransactions`` (a correct test backend) and on
backends that fail in chosen ways: refusals, the thread rule, what a failed backend
call leaves, the bounded re-runs, events only after a commit, and ``close()``
waiting for an open transaction.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from typing import Any

import pytest

import torpor
from tests.broken_backends import LockedTransactions
from tests.broken_backends.transactions import _Transaction
from torpor import Capability, Record, hookimpl
from torpor.errors import (
    BackendUnavailable,
    ConfigError,
    InvalidArgument,
    ReentrantCall,
    TransactionConflict,
    UnsupportedOperation,
)


def _in_with_block(mgr: torpor.Manager, body: Any) -> None:
    with mgr.transaction() as tx:
        body(tx)


def _open(backend: object | None = None, **options: Any) -> torpor.Manager:
    return torpor.open(backend or LockedTransactions(), sweeper=False, **options)


def test_a_backend_without_the_capability_says_so() -> None:
    with torpor.open("ets_like", sweeper=False) as mgr:
        with pytest.raises(UnsupportedOperation, match="TRANSACTIONS"):
            mgr.transaction()
        with pytest.raises(UnsupportedOperation):
            mgr.transaction(lambda tx: None)


def test_transactions_need_atomic_update() -> None:
    class Unisolated(LockedTransactions):
        def torpor_capabilities(self) -> Iterable[Capability]:
            return [Capability.TRANSACTIONS, Capability.SECONDARY_INDEX]

        torpor_transact = None  # type: ignore[assignment]

    with pytest.raises(ConfigError, match="TRANSACTIONS without ATOMIC_UPDATE"):
        _open(Unisolated())


def test_the_function_form_returns_its_result_and_refuses_what_is_not_a_function() -> None:
    with _open() as mgr:
        sid = mgr.create({"n": 1}).id
        assert mgr.transaction(lambda tx: tx.peek(sid).data["n"] + 1) == 2  # type: ignore[union-attr]
        with pytest.raises(InvalidArgument):
            mgr.transaction("not a function")  # type: ignore[call-overload]


def test_contention_every_time_gives_up_after_a_bounded_number_of_runs() -> None:
    runs = []

    def always_busy(tx: torpor.Transaction) -> None:
        runs.append(1)
        raise TransactionConflict("busy")

    with _open() as mgr, pytest.raises(TransactionConflict, match="10 times"):
        mgr.transaction(always_busy)
    assert len(runs) == 10


class _FailingStore(_Transaction):
    def store(self, record: Record) -> None:
        raise BackendUnavailable("the disk is full")


class FailingStores(LockedTransactions):
    transaction_class = _FailingStore


def test_a_failed_backend_call_rolls_back_even_when_the_body_swallows_it() -> None:
    backend = FailingStores()
    with _open(backend) as mgr:
        sid = mgr.create({"n": 1}).id

        def swallowing(tx: torpor.Transaction) -> None:
            with contextlib.suppress(BackendUnavailable):
                tx.update(sid, lambda d: {"n": 2})  # the body goes on after a failure
            with pytest.raises(BackendUnavailable, match="failed earlier"):
                tx.peek(sid)

        with pytest.raises(BackendUnavailable, match="rolled back"):
            _in_with_block(mgr, swallowing)
        assert mgr.peek(sid).data == {"n": 1}  # type: ignore[union-attr]
        mgr.update(sid, lambda d: {"n": 3})  # the lock was released
        assert mgr.peek(sid).data == {"n": 3}  # type: ignore[union-attr]


def test_a_transaction_is_used_from_the_thread_that_began_it() -> None:
    with _open() as mgr:
        sid = mgr.create({}).id
        raised: list[BaseException] = []
        with mgr.transaction() as tx:

            def elsewhere() -> None:
                try:
                    tx.peek(sid)
                except BaseException as exc:
                    raised.append(exc)

            thread = threading.Thread(target=elsewhere)
            thread.start()
            thread.join(timeout=10)
        assert len(raised) == 1 and isinstance(raised[0], InvalidArgument)


def test_the_manager_refuses_its_own_calls_with_a_message_that_says_what_to_use() -> None:
    with _open() as mgr:
        sid = mgr.create({}).id
        with mgr.transaction() as tx:
            with pytest.raises(ReentrantCall, match=r"tx\.get"):
                mgr.get(sid)

            def nested_update(data: dict[str, Any]) -> dict[str, Any]:
                with pytest.raises(ReentrantCall, match="update"):
                    mgr.peek(sid)
                return data

            tx.update(sid, nested_update)
            with pytest.raises(ReentrantCall, match=r"tx\.get"):  # still inside the transaction
                mgr.peek(sid)
        assert mgr.peek(sid) is not None


def test_observers_hear_of_changes_after_the_commit_and_never_of_a_rollback() -> None:
    events: list[tuple[str, str | None]] = []

    class Observer:
        @hookimpl
        def torpor_event(self, event: torpor.LifecycleEvent) -> None:
            events.append((event.kind.value, event.session_id))

    with _open(plugins=[Observer()]) as mgr:
        sid = mgr.create({}).id
        events.clear()

        def failing(tx: torpor.Transaction) -> None:
            tx.create({}, session_id="never")
            tx.delete(sid)
            raise RuntimeError

        with pytest.raises(RuntimeError):
            _in_with_block(mgr, failing)
        assert events == []
        with mgr.transaction() as tx:
            tx.create({}, session_id="made")
            tx.delete(sid)
            assert events == []  # not before the commit
        assert sorted(events) == sorted([("created", "made"), ("deleted", sid)])


def test_close_waits_for_an_open_transaction_which_commits() -> None:
    backend = LockedTransactions()
    mgr = _open(backend)
    sid = mgr.create({"n": 0}).id
    inside, closed = threading.Event(), threading.Event()
    closed_early: list[bool] = []

    def body() -> None:
        with mgr.transaction() as tx:
            inside.set()
            closed_early.append(closed.wait(0.2))  # close() must be waiting for this
            tx.update(sid, lambda d: {"n": 1})

    thread = threading.Thread(target=body)
    thread.start()
    assert inside.wait(10)
    mgr.close()
    closed.set()
    thread.join(timeout=10)
    assert closed_early == [False]
    assert Record.from_blob(backend.blobs[sid]).session_data(1 << 20) == {"n": 1}
    with pytest.raises(torpor.ManagerClosed):
        mgr.transaction(lambda tx: None)
