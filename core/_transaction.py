"""Multi-session transactions: ``Manager.transaction()`` (capability ``TRANSACTIONS``).

What a user gets
================

::

    with mgr.transaction() as tx:              # the body runs once
        a = tx.get("alice"); b = tx.get("bob")
        tx.update("alice", lambda d: {**d, "balance": d["balance"] - 10})
        tx.update("bob", lambda d: {**d, "balance": d["balance"] + 10})

    moved = mgr.transaction(transfer)          # transfer(tx) may run again

Everything a transaction does (``get``, ``peek``, ``create``, ``update``, ``save``,
``delete`` over any number of sessions) is applied together when it commits, or not
at all, and no other writer (thread or process) sees any of it before, or changes
what it reads meanwhile.  An exception in the body rolls it back and propagates.
``tx.transaction()`` opens a nested transaction: a savepoint, rolled back alone if
its body raises.

Like Mnesia's ``mnesia:transaction/1``, the function form re-runs its function when
the backend meets contention (``TransactionConflict``), a bounded number of times;
so the function must have no side effects besides its ``tx`` calls.  A ``with``
body cannot be re-run: there a conflict propagates as ``TransactionConflict``.  (A
backend that takes its write lock when the transaction begins, as SQLite's
``BEGIN IMMEDIATE`` does, never meets contention after that: its ``with`` bodies
never conflict.)  Inside a transaction the manager's own methods raise
``ReentrantCall`` in that thread: they would wait for the lock the transaction
holds.  Events and the in-process mailbox hear of the changes after the commit.

The seam
========

A backend claiming ``TRANSACTIONS`` implements ``torpor_transaction()``, returning a
:class:`BackendTransaction` that has already begun (and holds what it needs to be
isolated).  The manager calls it from the thread that began it, applies every
decision through it exactly as it would through ``torpor_transact`` (``store`` for a
returned ``Record``, ``remove`` for a ``Removal``), then commits or rolls back.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from torpor._decisions import (
    Change,
    Outcome,
    decide_create,
    decide_read,
    decide_remove,
    decide_rewrite,
)
from torpor._default import DEFAULT, Default
from torpor._events import EventKind
from torpor._ids import validate_id
from torpor._iteration import as_record
from torpor._lifecycle import user_code
from torpor._record import Record
from torpor._session import Session
from torpor.errors import (
    BackendUnavailable,
    InvalidArgument,
    SerializationError,
    SessionNotFound,
    TorporError,
    TransactionConflict,
)
from torpor.hookspecs import DELETE, Removal

if TYPE_CHECKING:
    from torpor._manager import Manager, SessionId

__all__ = ["BackendTransaction", "Transaction", "run_transaction", "transaction_scope"]

T = TypeVar("T")

ATTEMPTS: Final = 10
"""How often the function form runs its function before giving up on contention."""
_FIRST_PAUSE_S: Final = 0.001
_MAX_PAUSE_S: Final = 0.05


class BackendTransaction(Protocol):
    """One multi-session transaction of a backend (``torpor_transaction``).

    It has begun when ``torpor_transaction`` returns it, and is used from that thread
    only.  Any method may raise ``TransactionConflict`` (contention: the manager rolls
    back and may run the body again) or ``BackendUnavailable`` (the engine failed:
    the manager rolls back).
    """

    def fetch(self, session_id: str) -> Record | bytes | None:
        """What ``torpor_fetch`` returns, as this transaction sees it (its own writes
        included)."""

    def store(self, record: Record) -> None:
        """Store ``record`` as a transaction function returning it would: indexes
        follow, and a different incarnation over the stored one ends its mail as
        ``EXPIRE`` (a backend with ``SHARED_MAILBOX``)."""

    def remove(self, session_id: str, removal: Removal) -> None:
        """Remove the record as a transaction function returning ``removal`` would:
        indexes and (``SHARED_MAILBOX``) mail, with ``removal.reason`` left for
        receivers, which wake once the transaction commits."""

    def savepoint(self) -> None:
        """Open a nested transaction (a stack of them)."""

    def release(self) -> None:
        """Keep the innermost nested transaction's changes in the enclosing one."""

    def rollback_to(self) -> None:
        """Undo the innermost nested transaction's changes, and close it."""

    def commit(self) -> None:
        """Apply everything, atomically and durably (as the backend's writes are)."""

    def rollback(self) -> None:
        """Undo everything.  Called after any failure; must not raise for a
        transaction a failed call already ended."""


class Transaction:
    """The view a transaction's body works through (see the module docstring).
    Its methods take and return what the manager's do."""

    def __init__(self, manager: Manager, backend: BackendTransaction) -> None:
        self._m = manager
        self._b = backend
        self._thread = threading.get_ident()
        self._after: list[tuple[str, Outcome, bool]] = []  # settled after the commit
        self._marks: list[int] = []  # len(_after) at each open savepoint
        self._failed: BaseException | None = None
        self._ended = False

    # -- reads -------------------------------------------------------------------
    def get(self, session_id: SessionId) -> Session | None:
        """The session, touched (and woken) in this transaction; None if missing or
        expired (an expired one is removed)."""
        sid = validate_id(session_id)
        now, limit = self._m._clock(), self._m._max_bytes
        outcome = self._apply(sid, lambda current: decide_read(current, now, limit))
        return None if outcome.record is None else outcome.record.to_session(limit)

    def peek(self, session_id: SessionId) -> Session | None:
        """The session without touching it; None if missing or expired."""
        sid = validate_id(session_id)
        record = self._read(sid)
        if record is None or record.is_expired(self._m._clock()):
            return None
        return record.to_session(self._m._max_bytes)

    # -- writes ------------------------------------------------------------------
    def create(
        self,
        data: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        session_id: SessionId | None = None,
        timeout_ms: int | Default | None = DEFAULT,
    ) -> Session:
        """As ``Manager.create``, inside this transaction."""
        record = self._m._new_record(data, name, session_id, timeout_ms)
        now = record.created_at
        self._apply(record.id, lambda current: decide_create(current, record, now), created=True)
        return record.written_session(self._m._max_bytes)

    def update(
        self, session_id: SessionId, fn: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> Session:
        """As ``Manager.update``, inside this transaction."""
        sid = validate_id(session_id)
        return self._rewritten(sid, self._m._modifier(fn), "does not exist (or has expired)")

    def save(self, session: Session) -> Session:
        """As ``Manager.save``: ``Conflict`` for a stale copy."""
        sid, saver = self._m._saver(session)
        return self._rewritten(sid, saver, "was deleted or has expired; not saved")

    def delete(self, session_id: SessionId) -> bool:
        """As ``Manager.delete``: True if a session (or a damaged record) was there."""
        sid = validate_id(session_id)
        now = self._m._clock()
        try:
            outcome = self._apply(sid, lambda current: decide_remove(current, now, DELETE))
        except SerializationError:
            self._call(self._b.remove, sid, DELETE)  # damaged: removable without decoding
            return True
        return outcome.removal is DELETE

    # -- nesting -----------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A nested transaction (a savepoint): its changes are undone alone if its
        body raises (the exception propagates), kept in this one otherwise."""
        self._check()
        self._call(self._b.savepoint)
        self._marks.append(len(self._after))
        try:
            yield self
        except BaseException:
            mark = self._marks.pop()
            if self._failed is None:
                self._call(self._b.rollback_to)
                del self._after[mark:]
            raise
        self._marks.pop()
        self._call(self._b.release)

    # -- internals ---------------------------------------------------------------
    def _rewritten(self, sid: str, change: Callable[[Record], Record | None], gone: str) -> Session:
        now = self._m._clock()
        outcome = self._apply(sid, lambda current: decide_rewrite(current, now, change))
        if outcome.record is None:
            raise SessionNotFound(f"session {sid!r} {gone}")
        return outcome.record.written_session(self._m._max_bytes)

    def _read(self, sid: str) -> Record | None:
        self._check()
        return self._m._overlay(as_record(self._call(self._b.fetch, sid), sid))

    def _apply(
        self,
        sid: str,
        decide: Callable[[Record | None], tuple[Change, Outcome]],
        *,
        created: bool = False,
    ) -> Outcome:
        """Decide on the session as this transaction sees it, and write the change
        through the backend's transaction."""
        change, outcome = decide(self._read(sid))
        self._m._refuse_if_aborted()  # an urgent close gave up on this call
        if isinstance(change, Record):
            self._call(self._b.store, change)
        elif isinstance(change, Removal):
            self._call(self._b.remove, sid, change)
        self._after.append((sid, outcome, created))
        return outcome

    def _call(self, method: Callable[..., T], *args: Any) -> T:
        """A backend call; once one fails, the transaction can only roll back."""
        try:
            return method(*args)
        except BaseException as exc:
            self._failed = exc
            raise

    def _check(self) -> None:
        if self._ended:
            raise InvalidArgument(
                "this transaction has ended (committed or rolled back); a tx is used "
                "inside its with block or function only",
                argument="tx",
            )
        if threading.get_ident() != self._thread:
            raise InvalidArgument(
                "a transaction is used from the thread that began it", argument="tx"
            )
        if self._failed is not None:
            raise _failure(
                self._failed,
                "this transaction failed earlier (a backend call raised); it can only roll "
                "back: leave the with block, or let the function return",
            )

    def _settle(self) -> None:
        for sid, outcome, created in self._after:
            self._m._settle(sid, outcome)
            if created:
                self._m._emit(EventKind.CREATED, sid)


@contextmanager
def transaction_scope(
    manager: Manager, begin: Callable[[], BackendTransaction]
) -> Iterator[Transaction]:
    """One attempt: begin, run the body, commit; roll back on any exception."""
    with user_code(
        "a torpor manager was called inside its own transaction; use the transaction's "
        "methods (tx.get, tx.update, ...) in the body"
    ):
        tx = Transaction(manager, begin())
        try:
            try:
                yield tx
            except BaseException:
                _rollback(tx)
                raise
            if tx._failed is not None:
                _rollback(tx)
                raise _failure(
                    tx._failed,
                    "the transaction was rolled back: a backend call in it failed (and the "
                    "body went on); nothing of it was applied",
                )
            try:
                tx._b.commit()
            except BaseException:
                _rollback(tx)
                raise
        finally:
            tx._ended = True  # a tx kept past its block never reaches the backend
    tx._settle()


def run_transaction(
    manager: Manager, begin: Callable[[], BackendTransaction], fn: Callable[[Transaction], T]
) -> T:
    """The function form: ``fn(tx)`` in a transaction, run again on contention."""
    pause = _FIRST_PAUSE_S
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with transaction_scope(manager, begin) as tx:
                return fn(tx)
        except TransactionConflict as exc:
            if attempt == ATTEMPTS:
                raise TransactionConflict(
                    f"the transaction met contention {ATTEMPTS} times in a row; nothing of "
                    "it was applied"
                ) from exc
            time.sleep(pause)
            pause = min(pause * 2, _MAX_PAUSE_S)
    raise AssertionError("unreachable")  # pragma: no cover


def _failure(cause: BaseException, message: str) -> Exception:
    """An error like ``cause`` (so a conflict is still a conflict), for a call made
    after it."""
    kind = type(cause) if isinstance(cause, TransactionConflict) else BackendUnavailable
    error = kind(message)
    error.__cause__ = cause
    return error


def _rollback(tx: Transaction) -> None:
    # The original error says more; the backend ends its transaction anyway.
    with contextlib.suppress(TorporError):
        tx._b.rollback()
