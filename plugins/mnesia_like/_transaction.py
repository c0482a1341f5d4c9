"""The backend side of ``Manager.transaction()`` (``torpor_transaction``).

A :class:`SqliteTransaction` is ``BEGIN IMMEDIATE`` on the calling thread's
connection: it holds the database's write lock from the start, so its body never
meets contention once it has begun (isolated from every writer, threads and
processes), and nothing of it is visible to another connection before ``COMMIT``.
Nested transactions are savepoints, a stack of them.  Every change goes through the
same code as ``torpor_transact`` (``_rows.py``): indexes and mail in the same
transaction.  After the commit, this process's receivers of every session it
changed are woken (a removal may have ended their incarnation).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from torpor import Record, Removal
from torpor.errors import BackendUnavailable, ManagerClosed
from torpor.plugins.mnesia_like._errors import translated

if TYPE_CHECKING:
    from torpor.plugins.mnesia_like._backend import SqliteBackend

__all__ = ["SqliteTransaction"]


class SqliteTransaction:
    """One multi-session transaction (implements ``torpor.BackendTransaction``)."""

    def __init__(
        self,
        backend: SqliteBackend,
        conn: sqlite3.Connection,
        guard: AbstractContextManager[object],
    ) -> None:
        self._backend = backend
        self._conn: sqlite3.Connection | None = conn
        self._guard = guard  # held (ram mode) until the transaction ends
        self._depth = 0
        self._changed: dict[str, None] = {}

    @classmethod
    def begin(cls, backend: SqliteBackend) -> SqliteTransaction:
        db = backend.db
        guard = db.guard(conflict=True)
        guard.__enter__()
        try:
            conn = db.begin("transaction")
        except BaseException:
            guard.__exit__(None, None, None)
            raise
        return cls(backend, conn, guard)

    # -- the protocol ------------------------------------------------------------------
    def fetch(self, session_id: str) -> Record | bytes | None:
        conn = self._open()
        with translated("transaction fetch"):
            found = conn.execute(
                "SELECT blob FROM torpor_sessions WHERE id = ?", (session_id.encode("utf-8"),)
            ).fetchone()
        return None if found is None else bytes(found[0])

    def store(self, record: Record) -> None:
        conn = self._open()
        rows = self._backend.rows
        with translated("transaction store"):
            rows.put(conn, record, rows.row(conn, record.id.encode("utf-8")))
        self._changed[record.id] = None

    def remove(self, session_id: str, removal: Removal) -> None:
        conn = self._open()
        with translated("transaction remove"):
            self._backend.rows.remove(conn, session_id.encode("utf-8"), removal.reason)
        self._changed[session_id] = None

    def savepoint(self) -> None:
        self._depth += 1
        self._execute(f"SAVEPOINT torpor_tx_{self._depth}")

    def release(self) -> None:
        self._execute(f"RELEASE torpor_tx_{self._depth}")
        self._depth -= 1

    def rollback_to(self) -> None:
        name = f"torpor_tx_{self._depth}"
        self._execute(f"ROLLBACK TO {name}")
        self._execute(f"RELEASE {name}")
        self._depth -= 1

    def commit(self) -> None:
        conn = self._open()
        if self._backend.closing:
            raise ManagerClosed("the manager was closed; this transaction was not applied")
        with translated("transaction commit"):
            conn.execute("COMMIT")
        self._end()
        mailbox = self._backend.mailbox
        for sid in self._changed:
            mailbox.changed(sid)

    def rollback(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite has rolled back already (or the backend closed): nothing stays
        finally:
            self._release_guard()

    # -- internals ---------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise BackendUnavailable("mnesia_like: this transaction has ended")
        return self._conn

    def _execute(self, sql: str) -> None:
        conn = self._open()
        with translated("transaction"):
            conn.execute(sql)

    def _end(self) -> None:
        self._conn = None
        self._release_guard()

    def _release_guard(self) -> None:
        guard: Callable[..., object] = self._guard.__exit__
        guard(None, None, None)
