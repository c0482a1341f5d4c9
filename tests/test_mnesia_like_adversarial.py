"""Adversarial review of mnesia_like and multi-session transactions (issue 11).

Each test states the contract it holds the code to.  Real SQLite files (or the ram
mode's shared in-memory database) in tmp_path, time from ``torpor.ManualClock``;
waits are bounded joins on real events, never sleeps for a threshold.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import torpor
from torpor.conformance.helpers import expect_raises
from torpor.errors import (
    BackendUnavailable,
    ConfigError,
    InvalidArgument,
    TorporError,
    TransactionConflict,
)
from torpor.plugins.mnesia_like import create_backend

# How long a thread blocked behind an open transaction may take to answer: far more
# than busy_timeout_ms=50 x 4 waits, far less than "forever".
_BOUND_S = 2.0


def _open(path: Path, **options: Any) -> torpor.Manager:
    return torpor.open(
        create_backend(path=path, **options), clock=torpor.ManualClock(1_000), sweeper=False
    )


def _in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run ``call`` in a thread; its result or exception lands in the list."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(call())
        except BaseException as exc:  # the test inspects it
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


# -- a reader in another thread while a transaction is open ---------------------------
@pytest.mark.parametrize("storage", ["disc", "ram"])
def test_a_read_in_another_thread_is_answered_or_refused_in_bounded_time(
    tmp_path: Path, storage: str
) -> None:
    """The guide: other readers "see all of it or none of it" of a transaction, and
    every wait is bounded by busy_timeout_ms.  In disc a reader in another thread gets
    the committed value at once (WAL).  In ram a transaction holds the shared-cache
    database from begin to end (a shared cache answers contention with SQLITE_LOCKED,
    which no busy handler waits for), so the reader waits: this once had no bound,
    and a body waiting for another thread's read deadlocked for good.  Now the wait
    is bounded like a writer's (busy_timeout_ms, 4 times), then BackendUnavailable
    (documented in the guide)."""
    with _open(tmp_path / "s.db", storage=storage, busy_timeout_ms=50) as mgr:
        s = mgr.create({"n": 1}, session_id="s")
        with mgr.transaction() as tx:
            tx.update(s.id, lambda d: {"n": 2})
            reader, seen = _in_thread(lambda: mgr.peek(s.id))
            reader.join(_BOUND_S)
            answered = not reader.is_alive()
        reader.join(_BOUND_S)
        assert answered, f"{storage}: a peek in another thread waited for the whole transaction"
        if storage == "disc":
            session = seen[0]
            assert isinstance(session, torpor.Session) and session.data == {"n": 1}, seen
        else:
            assert isinstance(seen[0], BackendUnavailable), seen
            assert "in ram mode" in str(seen[0])


@pytest.mark.parametrize(
    ("what", "kind"),
    [("update", BackendUnavailable), ("transaction", TransactionConflict)],
)
def test_in_ram_a_writer_behind_an_open_transaction_gets_a_typed_error_in_bounded_time(
    tmp_path: Path, what: str, kind: type[TorporError]
) -> None:
    """hookspecs ``torpor_transaction``: "Waiting for the write lock is bounded: raise
    TransactionConflict when the lock cannot be had in time"; the guide: the
    transaction "waits for the lock (bounded by busy_timeout_ms)".  disc does this
    (``test_a_lock_held_too_long_is_a_typed_error_naming_the_contention``).  In ram,
    ``SqliteTransaction.begin`` and ``Database.write`` take ``Database.guard()`` (an
    RLock) with no timeout before ``BEGIN IMMEDIATE``, so a writer behind a long
    transaction waits forever instead of failing after busy_timeout_ms x 4."""
    with _open(tmp_path / "s.db", storage="ram", busy_timeout_ms=50) as mgr:
        s = mgr.create({"n": 1}, session_id="s")

        def write() -> object:
            if what == "update":
                return mgr.update(s.id, lambda d: {"n": 9})
            with mgr.transaction() as other:
                return other.update(s.id, lambda d: {"n": 9})

        with mgr.transaction() as tx:
            tx.update(s.id, lambda d: {"n": 2})
            writer, outcome = _in_thread(write)
            writer.join(_BOUND_S)
            answered = not writer.is_alive()
        writer.join(_BOUND_S)
        assert answered, f"ram: a {what} behind an open transaction waited without bound"
        assert len(outcome) == 1 and isinstance(outcome[0], kind), outcome


# -- one store, one configuration -------------------------------------------------------
@pytest.mark.parametrize(("first", "second"), [("disc", "disc_only"), ("disc_only", "disc")])
def test_a_file_open_in_one_storage_mode_is_refused_in_another(
    tmp_path: Path, first: str, second: str
) -> None:
    """DESIGN.md / docs/contract.md, "One store, one configuration": a second manager
    opened on storage already open in the process with different storage options
    ("durability, map size, readers, storage mode") is refused with ConfigError; it
    never silently runs with other settings.  mnesia_like opens the same file as
    disc and disc_only side by side: a user who chose disc_only ("every acknowledged
    write survives an OS crash") has a second writer committing with
    synchronous=NORMAL, and nothing says so.

    Likely fix: a process-wide registry of open paths (resolved, as the ram mode's
    ``_MEMORY`` already keys by path) -> storage mode in ``_connections.py``;
    ``Database.__init__`` raises ConfigError naming both modes on a mismatch, and
    ``close`` drops the entry with its last user (as lmdb's ``_envs.py`` does)."""
    path = tmp_path / "s.db"
    with _open(path, storage=first):

        def second_open() -> None:
            _open(path, storage=second).close()

        error = expect_raises(ConfigError, second_open)
        assert first in str(error) and second in str(error), error


# -- a transaction used after its block ended -------------------------------------------
@pytest.mark.parametrize("ended_by", ["commit", "exception"])
def test_a_transaction_used_after_its_block_ended_is_a_usage_error(
    tmp_path: Path, ended_by: str
) -> None:
    """Keeping ``tx`` past its ``with`` block is a programming error, like using it
    from another thread (which raises InvalidArgument(argument="tx")).  Instead
    ``torpor.Transaction`` does not know it has ended and passes the call on; the
    backend answers ``BackendUnavailable`` ("the engine failed": what an operator
    alerts on and a caller retries), and the call also marks ``tx`` failed, so the
    next use says "a backend call raised" about a backend that never failed.  A
    third-party backend whose ``fetch``/``store`` do not check would even write
    outside any transaction.

    Likely fix: ``transaction_scope`` marks the Transaction ended (in a ``finally``)
    and ``Transaction._check`` raises InvalidArgument(argument="tx") saying the
    transaction has ended, before any backend call."""
    with _open(tmp_path / "s.db") as mgr:
        s = mgr.create({"n": 1}, session_id="s")
        kept: list[torpor.Transaction] = []

        def body() -> None:
            with mgr.transaction() as tx:
                kept.append(tx)
                tx.update(s.id, lambda d: {"n": 2})
                if ended_by == "exception":
                    raise KeyError("abort")

        if ended_by == "exception":
            expect_raises(KeyError, body)
        else:
            body()
        tx = kept[0]
        for use in (
            lambda: tx.get(s.id),
            lambda: tx.update(s.id, lambda d: {"n": 3}),
            lambda: tx.create({}, session_id="late"),
        ):
            error = expect_raises(TorporError, use)
            assert isinstance(error, InvalidArgument) and "ended" in str(error), repr(error)
        assert mgr.peek("late") is None
        expected = {"n": 2} if ended_by == "commit" else {"n": 1}
        assert mgr.peek(s.id).data == expected  # type: ignore[union-attr]


# -- a session stored without torpor's metadata columns never expires ---------------------
def test_an_expired_foreign_row_is_left_by_sweeps_and_removed_by_delete(
    tmp_path: Path,
) -> None:
    """A row another program wrote (``conformance_plant``: an intact record's blob,
    no metadata columns) is a session to reads and walks, but not in the backend's
    indexes, and sweeps go through the indexes: expired, it stays (counted in
    ``stats().expired_pending``) until ``delete`` removes it (and returns False, as
    for any expired session).  Documented as a limit
    of every index-based backend (docs/contract.md §8); a review found it here first.
    A write through torpor (any update or touch) files the row in the indexes."""
    clock = torpor.ManualClock(1_000)
    backend = create_backend(path=tmp_path / "s.db")
    with torpor.open(backend, clock=clock, sweeper=False) as mgr:
        mgr.create({"i": 1}, session_id="p", timeout_ms=100)
        blob = mgr._b.fetch("p")  # type: ignore[attr-defined]
        assert isinstance(blob, bytes)
        mgr.delete("p")
        backend.conformance_plant(b"p", blob)
        assert mgr.peek("p") is not None and list(mgr.ids()) == ["p"]
        clock.advance(1_000)
        assert mgr.stats().expired_pending == 1
        assert mgr.cleanup_expired() == 0
        mgr.delete("p")  # False: an expired session counts as gone, but its row goes
        assert mgr.stats().stored == 0
