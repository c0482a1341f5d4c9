"""Multi-session transactions (capability TRANSACTIONS): ``Manager.transaction()``.

Everything a transaction does commits together or not at all; nothing of it is seen,
or changed under it, by any other writer or reader before it commits; the function
form runs its function again after contention, and only the last run counts; a
nested transaction rolls back alone.  The bank transfers (``torpor.conformance._bank``)
check all of it at once under load: the total never changes, and each account ends
exactly where the transfers that happened put it.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import torpor
from torpor.conformance._bank import (
    OPENING,
    balances,
    expected,
    open_accounts,
    transfer,
    transfers,
)
from torpor.conformance._kit import Kit
from torpor.conformance._marks import kit_module
from torpor.conformance.helpers import blocked_consumer

THREADS = 4
ROUNDS = 60
"""Transfers per thread (and per process): enough to interleave on every backend."""


class Boom(Exception):
    """The user's own exception, raised inside a transaction."""


def _add(amount: int) -> Any:
    return lambda d: {**d, "balance": d["balance"] + amount}


def _in_with_block(owner: torpor.Manager | torpor.Transaction, body: Any) -> None:
    """``body(tx)`` inside ``with owner.transaction() as tx`` (nested for a
    transaction)."""
    with owner.transaction() as tx:
        body(tx)


def _balance(mgr: torpor.Manager, sid: str) -> int | None:
    session = mgr.peek(sid)
    return None if session is None else int(session.data["balance"])


def test_a_transaction_applies_all_of_its_writes_together(kit: Kit) -> None:
    mgr = kit.open()
    a, b, c = open_accounts(mgr, 3)
    with mgr.transaction() as tx:
        tx.update(a, _add(-10))
        tx.update(b, _add(10))
        made = tx.create({"balance": 1}, session_id="made-in-a-transaction")
        assert tx.delete(c) is True
        # The transaction reads its own writes.
        assert tx.peek(a).data == {"balance": OPENING - 10}  # type: ignore[union-attr]
        assert tx.peek(c) is None and tx.peek(made.id) is not None
    assert (_balance(mgr, a), _balance(mgr, b), _balance(mgr, c)) == (90, 110, None)
    assert _balance(mgr, made.id) == 1
    assert sorted(mgr.ids()) == sorted([a, b, made.id]) and len(mgr) == 3
    assert mgr.peek(a).version == 2  # type: ignore[union-attr]


def test_an_exception_rolls_everything_back_and_propagates(kit: Kit) -> None:
    mgr = kit.open()
    a, b, c = open_accounts(mgr, 3)

    def body(tx: torpor.Transaction) -> None:
        tx.update(a, _add(-10))
        tx.create({}, session_id="never-made")
        tx.delete(c)
        tx.get(b)  # a touch is a write too
        raise Boom

    with pytest.raises(Boom):
        _in_with_block(mgr, body)
    assert [_balance(mgr, s) for s in (a, b, c)] == [OPENING] * 3
    assert "never-made" not in mgr and sorted(mgr.ids()) == sorted([a, b, c])
    assert [mgr.peek(s).version for s in (a, b, c)] == [1, 1, 1]  # type: ignore[union-attr]
    # The store is usable at once: nothing of the transaction holds it.
    mgr.update(a, _add(1))
    assert _balance(mgr, a) == OPENING + 1


def test_a_function_runs_again_after_contention_and_only_its_last_run_counts(
    kit: Kit,
) -> None:
    mgr = kit.open()
    a, b = open_accounts(mgr, 2)
    runs: list[int] = []

    def move(tx: torpor.Transaction) -> str:
        runs.append(len(runs))
        tx.update(a, _add(-10))
        tx.update(b, _add(10))
        tx.create({}, session_id=f"run-{len(runs)}")
        if len(runs) == 1:  # contention met after writing: that run must leave nothing
            raise torpor.TransactionConflict("contention, as a backend reports it")
        return "moved"

    assert mgr.transaction(move) == "moved" and runs == [0, 1]
    assert (_balance(mgr, a), _balance(mgr, b)) == (OPENING - 10, OPENING + 10)
    assert "run-1" not in mgr and "run-2" in mgr


def test_a_with_block_is_not_run_again(kit: Kit) -> None:
    mgr = kit.open()
    (a,) = open_accounts(mgr, 1)
    runs: list[int] = []

    def body(tx: torpor.Transaction) -> None:
        runs.append(1)
        tx.update(a, _add(5))
        raise torpor.TransactionConflict("contention, as a backend reports it")

    with pytest.raises(torpor.TransactionConflict):
        _in_with_block(mgr, body)
    assert runs == [1] and _balance(mgr, a) == OPENING


def test_a_nested_transaction_rolls_back_alone(kit: Kit) -> None:
    mgr = kit.open()
    a, b, c = open_accounts(mgr, 3)
    with mgr.transaction() as tx:
        tx.update(a, _add(1))

        def nested(inner: torpor.Transaction) -> None:
            inner.update(b, _add(5))
            inner.create({}, session_id="inner")
            inner.delete(a)
            raise Boom

        with pytest.raises(Boom):
            _in_with_block(tx, nested)
        assert tx.peek(b).data == {"balance": OPENING}  # type: ignore[union-attr]
        assert tx.peek("inner") is None
        assert tx.peek(a).data == {"balance": OPENING + 1}  # type: ignore[union-attr]
        with tx.transaction() as kept:
            kept.update(c, _add(7))
    assert [_balance(mgr, s) for s in (a, b, c)] == [OPENING + 1, OPENING, OPENING + 7]
    assert "inner" not in mgr and len(mgr) == 3


def test_errors_inside_are_typed_and_the_transaction_goes_on(kit: Kit) -> None:
    mgr = kit.open()
    a, b = open_accounts(mgr, 2)
    with mgr.transaction() as tx:
        with pytest.raises(torpor.SessionNotFound):
            tx.update("no-such-session", _add(1))
        with pytest.raises(torpor.SessionExists):
            tx.create({}, session_id=a)
        stale = tx.get(a)
        tx.update(a, _add(1))
        with pytest.raises(torpor.Conflict):
            tx.save(stale)  # type: ignore[arg-type]
        with pytest.raises(torpor.SerializationError):
            tx.update(b, lambda d: None)  # type: ignore[arg-type,return-value]
        tx.update(b, _add(2))
    assert (_balance(mgr, a), _balance(mgr, b)) == (OPENING + 1, OPENING + 2)


def test_the_managers_own_calls_are_refused_inside_its_transaction(kit: Kit) -> None:
    mgr = kit.open()
    (a,) = open_accounts(mgr, 1)
    with mgr.transaction() as tx:
        tx.update(a, _add(1))
        with pytest.raises(torpor.ReentrantCall):
            mgr.peek(a)
        with pytest.raises(torpor.ReentrantCall), mgr.transaction():
            pass
    assert _balance(mgr, a) == OPENING + 1
    with mgr.transaction() as tx:  # and the thread is free again afterwards
        tx.update(a, _add(1))
    assert _balance(mgr, a) == OPENING + 2


def test_nothing_is_seen_or_changed_by_others_before_the_commit(kit: Kit) -> None:
    mgr = kit.open()
    a, b = open_accounts(mgr, 2)
    seen: list[int | None] = []
    written = threading.Event()
    with mgr.transaction() as tx:
        tx.update(a, lambda d: {**d, "balance": 500})
        tx.delete(b)
        # Another reader sees the state before (a backend whose readers wait for the
        # commit shows it the state after, whole): never a part of the transaction.
        reader = threading.Thread(target=lambda: seen.extend([_balance(mgr, a), _balance(mgr, b)]))
        reader.start()
        reader.join(timeout=0.3)
        if not reader.is_alive():
            assert seen == [OPENING, OPENING], "another reader saw an uncommitted write"

        def add_ten() -> None:
            mgr.update(a, _add(10))
            written.set()

        writer = threading.Thread(target=add_ten)
        writer.start()
        # The writer must wait for this transaction; it is given time to go wrong.
        assert not written.wait(0.3), "another writer changed a session inside a transaction"
    writer.join(timeout=30)
    reader.join(timeout=30)
    assert seen in ([OPENING, OPENING], [500, None]), f"a reader saw a part of it: {seen}"
    assert written.is_set()
    assert _balance(mgr, a) == 510 and b not in mgr  # applied after the commit, on top


def test_a_rolled_back_removal_keeps_the_mail_and_a_committed_one_ends_it(kit: Kit) -> None:
    mgr = kit.open()
    a, b = open_accounts(mgr, 2)
    mgr.send(a, "kept")

    def body(tx: torpor.Transaction) -> None:
        tx.delete(a)
        raise Boom

    with pytest.raises(Boom):
        _in_with_block(mgr, body)
    assert mgr.receive(a) == ["kept"]
    thread, outcome = blocked_consumer(mgr, b)
    with mgr.transaction() as tx:
        tx.delete(b)
    thread.join(timeout=10)
    assert not thread.is_alive(), "a consumer of a session a transaction deleted slept on"
    assert len(outcome) == 1 and isinstance(outcome[0], torpor.SessionNotFound), outcome


def test_transfers_from_threads_keep_every_balance_exact(kit: Kit) -> None:
    mgr = kit.open()
    accounts = open_accounts(mgr, 6)
    done: list[list[Any]] = []
    lock = threading.Lock()

    def work(seed: int) -> None:
        moved = transfers(mgr, accounts, ROUNDS, seed)
        with lock:
            done.extend(moved)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert done, "no transfer happened"
    found = balances(mgr, accounts)
    assert sum(found.values()) == OPENING * len(accounts)
    assert found == expected(accounts, done)


@pytest.mark.torpor_requires("multi_process")
def test_transfers_from_processes_and_threads_keep_every_balance_exact(kit: Kit) -> None:
    if not kit.target.spawnable:
        pytest.skip("missing: the target is a build= callable, which cannot reach a process")
    mgr = kit.open()
    accounts = open_accounts(mgr, 6)
    children = [kit.start("transfers", ids=accounts, rounds=ROUNDS, seed=100 + i) for i in range(2)]
    done = transfers(mgr, accounts, ROUNDS, seed=7)
    for child in children:
        done += child.result()["done"]
    found = balances(mgr, accounts)
    assert sum(found.values()) == OPENING * len(accounts)
    assert found == expected(accounts, done)


def test_a_transfer_that_cannot_pay_changes_nothing(kit: Kit) -> None:
    mgr = kit.open()
    a, b = open_accounts(mgr, 2)
    assert mgr.transaction(lambda tx: transfer(tx, a, b, OPENING + 1)) is False
    assert mgr.transaction(lambda tx: transfer(tx, a, b, OPENING)) is True
    assert (_balance(mgr, a), _balance(mgr, b)) == (0, 2 * OPENING)


kit_module(globals(), "transactions", "transactions")
