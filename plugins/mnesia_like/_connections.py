"""Connections to one database: one per thread, its pragmas, the ram mode's shared
in-memory database, and the write transaction every change runs in.

* **One connection per thread**, kept in a ``threading.local``: a read is one cached
  statement on it, with no pool to pass through.  A thread that ends drops its
  connection with its thread-local storage (sqlite3 closes it then); ``close()``
  closes the rest.  A thread always gets its own connection back, so a read made
  inside a write of the same thread (``torpor_shared_dictionary`` from a transaction
  function) sees that write and never waits for it.
* **Writes** are ``BEGIN IMMEDIATE`` ... ``COMMIT``: the write lock is taken first,
  never by upgrading a read, which under WAL fails with ``SQLITE_BUSY_SNAPSHOT``
  whatever the busy timeout.  SQLite's busy handler waits up to ``busy_timeout_ms``
  for the lock; beyond that the whole body runs again (a transaction function may
  be called again: the hook contract allows it), ``RETRIES`` times, then
  ``BackendUnavailable`` names the contention.
* **ram** is ``file:<name>?mode=memory&cache=shared``: every connection of the
  process that names it shares one database, which lives while one stays open, so
  the first backend on it keeps an *anchor* connection open until the last one
  closes.  A shared cache answers contention with ``SQLITE_LOCKED``, which no busy
  handler waits for, so in ram mode every statement (and every transaction, from
  its ``BEGIN`` to its end) holds the database's process-wide lock instead: all its
  users are in this process.  So in ram mode a transaction also holds off readers in
  other threads; every wait for that lock is bounded like a wait for SQLite's
  (``busy_timeout_ms``, ``RETRIES`` + 1 times), then a typed error.
* **One storage mode per file** in a process: a second backend on a file already
  open with another mode is refused (``ConfigError``).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext, suppress
from pathlib import Path
from typing import Final, NamedTuple, TypeVar

from torpor.errors import (
    BackendUnavailable,
    ConfigError,
    ManagerClosed,
    TorporError,
    TransactionConflict,
)
from torpor.plugins.mnesia_like._errors import describe, is_busy, translate, translated

__all__ = ["MODES", "RETRIES", "Database", "Mode"]

T = TypeVar("T")
RETRIES: Final = 3
"""Attempts after the first once the busy handler has waited ``busy_timeout_ms``."""
_PAUSE_S: Final = 0.005


class Mode(NamedTuple):
    """What a storage mode sets on every connection."""

    name: str
    synchronous: str
    cache_kib: int | None  # None: SQLite's default page cache
    persistent: bool


MODES: Final = {
    # WAL + NORMAL: a killed process loses nothing (the WAL is in the OS's hands); an
    # OS crash or power cut may lose the last transactions, never corrupt the file.
    "disc": Mode("disc", "NORMAL", None, True),
    # WAL + FULL: every commit is fsynced before it is acknowledged.
    "disc_only": Mode("disc_only", "FULL", 256, True),
    "ram": Mode("ram", "OFF", None, False),
}


class _Memory:
    """A shared in-memory database of this process, and who uses it."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.anchor = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        self.lock = threading.RLock()
        self.users = 0


class _Bounded:
    """Holds a ram database's lock, waiting for it no longer than a writer waits for
    SQLite's lock in the other modes; then ``error()`` is raised."""

    def __init__(self, lock: threading.RLock, wait_s: float, error: Callable[[], TorporError]):
        self._lock, self._wait_s, self._error = lock, wait_s, error

    def __enter__(self) -> None:
        if not self._lock.acquire(timeout=self._wait_s):
            raise self._error()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class _Held:
    """A thread's connection, in the backend's weak registry: the thread-local storage
    holds the only strong reference, so the connection goes with its thread."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __del__(self) -> None:
        with suppress(sqlite3.Error):
            self.conn.close()


_MEMORY: dict[str, _Memory] = {}
_MEMORY_LOCK = threading.Lock()


class Database:
    """The connections of one backend to its database (see the module docstring)."""

    def __init__(self, path: Path | None, mode: Mode, busy_timeout_ms: int) -> None:
        self.mode = mode
        self.path = path
        self._busy_s = busy_timeout_ms / 1000
        self._busy_ms = busy_timeout_ms
        self._local = threading.local()
        self._all: weakref.WeakSet[_Held] = weakref.WeakSet()
        self._all_lock = threading.Lock()
        self.closed = False
        self._memory: _Memory | None = None
        if mode.persistent:
            assert path is not None
            self.target = str(path)
            self._uri = False
            _prepare_files(path)
            self._file = _claim_file(path, mode)
            self._guard: Callable[[bool], AbstractContextManager[object]] = _unguarded
        else:
            self._memory = _acquire_memory(path)
            self.target = self._memory.uri
            self._uri = True
            self._guard = self._bounded

    # -- connections -------------------------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (``ManagerClosed`` once the backend closed)."""
        held: _Held | None = getattr(self._local, "held", None)
        if held is None or self.closed:
            return self._connect()
        return held.conn

    def _connect(self) -> sqlite3.Connection:
        if self.closed:
            raise ManagerClosed("this mnesia_like backend is closed; open a new manager")
        with translated(f"cannot open {self.target}"):
            conn = sqlite3.connect(
                self.target,
                uri=self._uri,
                timeout=self._busy_s,
                isolation_level=None,
                check_same_thread=False,  # close() closes it from another thread
                cached_statements=256,
            )
            try:
                conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
                conn.execute(f"PRAGMA synchronous = {self.mode.synchronous}")
                if self.mode.cache_kib is not None:
                    conn.execute(f"PRAGMA cache_size = -{self.mode.cache_kib}")
                conn.execute("PRAGMA trusted_schema = OFF")
            except BaseException:
                conn.close()
                raise
        held = _Held(conn)
        with self._all_lock:
            self._all.add(held)
        self._local.held = held  # dropped (and the connection closed) with the thread
        return conn

    def guard(self, conflict: bool = False) -> AbstractContextManager[object]:
        """Held around every statement in ram mode (see the module docstring): a wait
        for it is bounded like a wait for SQLite's lock, then ``BackendUnavailable``
        (``TransactionConflict`` with ``conflict``: a transaction not begun yet)."""
        return self._guard(conflict)

    def _bounded(self, conflict: bool = False) -> AbstractContextManager[object]:
        assert self._memory is not None
        kind: type[TorporError] = TransactionConflict if conflict else BackendUnavailable
        waited = (RETRIES + 1) * self._busy_s

        def error() -> TorporError:
            return kind(
                f"mnesia_like: another thread held the in-memory database {self.target} "
                f"for over {waited:g} s (a transaction holds it from begin to end in ram "
                f"mode; {RETRIES + 1} waits of busy_timeout_ms={self._busy_ms})"
            )

        return _Bounded(self._memory.lock, waited, error)

    # -- statements --------------------------------------------------------------------
    def read(self, where: str, body: Callable[[sqlite3.Connection], T]) -> T:
        """``body`` on this thread's connection, in autocommit: each statement is its
        own short read transaction."""
        with self.guard():
            try:
                return body(self.conn())
            except sqlite3.Error as exc:
                raise translate(exc, where) from exc

    def write(self, where: str, body: Callable[[sqlite3.Connection], T]) -> T:
        """``body`` in one ``BEGIN IMMEDIATE`` transaction, committed; run again on
        contention (see the module docstring).  Anything ``body`` raises rolls back."""
        for attempt in range(RETRIES + 1):
            with self.guard():
                try:
                    conn = self.conn()
                    if conn.in_transaction:  # a nested call inside a transaction: join it
                        return _in_savepoint(conn, body)
                    try:
                        conn.execute("BEGIN IMMEDIATE")
                    except sqlite3.OperationalError as exc:
                        if is_busy(exc) and attempt < RETRIES:
                            time.sleep(_PAUSE_S * (attempt + 1))
                            continue
                        raise self.contention(where, exc) from exc
                    try:
                        result = body(conn)
                        conn.execute("COMMIT")
                    except sqlite3.OperationalError as exc:
                        _rollback(conn)
                        if is_busy(exc) and attempt < RETRIES:
                            continue
                        raise
                    except BaseException:
                        _rollback(conn)
                        raise
                    return result
                except sqlite3.Error as exc:
                    raise translate(exc, where) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def begin(self, where: str) -> sqlite3.Connection:
        """``BEGIN IMMEDIATE`` on this thread's connection, for a transaction the caller
        ends (``_transaction.py``).  ``TransactionConflict`` when the write lock cannot
        be had in time.  In ram mode the caller holds :meth:`guard` until it ends."""
        for attempt in range(RETRIES + 1):
            with translated(where):
                conn = self.conn()
                if conn.in_transaction:
                    raise BackendUnavailable(
                        "mnesia_like: this thread already has a transaction open on the database"
                    )
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return conn
                except sqlite3.OperationalError as exc:
                    if not is_busy(exc):
                        raise
                    if attempt == RETRIES:
                        raise self.contention(where, exc, TransactionConflict) from exc
            time.sleep(_PAUSE_S * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def contention(
        self, where: str, exc: sqlite3.Error, kind: type[TorporError] = BackendUnavailable
    ) -> TorporError:
        waited = (RETRIES + 1) * self._busy_s
        return kind(
            f"mnesia_like {where}: another writer held {self.target}'s write lock for "
            f"over {waited:g} s ({RETRIES + 1} waits of busy_timeout_ms={self._busy_ms}); "
            f"{describe(exc)}"
        )

    # -- closing -----------------------------------------------------------------------
    def close(self, optimize: bool) -> None:
        """Close every connection (``PRAGMA optimize`` first if ``optimize``), and in
        ram mode let go of the shared database (the last user drops it)."""
        if self.closed:
            return
        if optimize:
            try:
                with self.guard():
                    self.conn().execute("PRAGMA optimize")
            except (sqlite3.Error, BackendUnavailable, ManagerClosed):
                pass  # advice for the query planner: never worth failing a close
        self.closed = True
        with self._all_lock:
            conns = list(self._all)
            self._all.clear()
        for held in conns:
            with suppress(sqlite3.Error):  # in use by a thread an urgent close gave up on
                held.conn.close()
        self._local = threading.local()
        if self._memory is not None:
            _release_memory(self._memory)
        else:
            _release_file(self._file)


def _in_savepoint(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("SAVEPOINT torpor_nested")
    try:
        result = body(conn)
    except BaseException:
        conn.execute("ROLLBACK TO torpor_nested")
        conn.execute("RELEASE torpor_nested")
        raise
    conn.execute("RELEASE torpor_nested")
    return result


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with suppress(sqlite3.Error):  # the original error says more
            conn.execute("ROLLBACK")


def _prepare_files(path: Path) -> None:
    """The folder (0700 if created here) and the database file (0600 if created here:
    SQLite gives its -wal and -shm files the database file's permissions)."""
    folder = path.parent
    try:
        missing = [f for f in (folder, *folder.parents) if not f.exists()]
        for created in reversed(missing):  # each folder created here is 0700
            created.mkdir(mode=0o700, exist_ok=True)
        if path.is_dir():
            raise BackendUnavailable(
                f"mnesia_like path {str(path)!r} is a folder; it names the database file"
            )
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
    except OSError as exc:
        raise BackendUnavailable(f"mnesia_like cannot create {str(path)!r}: {exc}") from exc


def _unguarded(conflict: bool = False) -> AbstractContextManager[object]:
    return nullcontext()


# Each database file this process has open -> (its storage mode, how many backends):
# one file has one configuration in a process (docs/contract.md), so a disc_only
# user never shares its file with a writer that commits at synchronous=NORMAL.
_FILES: dict[str, tuple[str, int]] = {}
_FILES_LOCK = threading.Lock()


def _claim_file(path: Path, mode: Mode) -> str:
    key = os.path.realpath(path)
    with _FILES_LOCK:
        held, users = _FILES.get(key, (mode.name, 0))
        if held != mode.name:
            raise ConfigError(
                f"mnesia_like database {str(path)!r} is open in this process with "
                f"storage={held!r}; it cannot be opened with storage={mode.name!r} too "
                "(one file, one storage mode: close the other managers first)"
            )
        _FILES[key] = (held, users + 1)
    return key


def _release_file(key: str) -> None:
    with _FILES_LOCK:
        mode, users = _FILES.get(key, ("", 1))
        if users <= 1:
            _FILES.pop(key, None)
        else:
            _FILES[key] = (mode, users - 1)


def _acquire_memory(path: Path | None) -> _Memory:
    """The shared in-memory database named by ``path`` (a private one for None)."""
    if path is None:
        name = os.urandom(16).hex()
    else:
        name = hashlib.blake2b(os.fsencode(os.path.abspath(path)), digest_size=16).hexdigest()
    uri = f"file:torpor-{name}?mode=memory&cache=shared"
    with _MEMORY_LOCK:
        memory = _MEMORY.get(uri)
        if memory is None:
            with translated("cannot open an in-memory database"):
                memory = _MEMORY[uri] = _Memory(uri)
        memory.users += 1
        return memory


def _release_memory(memory: _Memory) -> None:
    with _MEMORY_LOCK:
        memory.users -= 1
        if memory.users == 0:
            _MEMORY.pop(memory.uri, None)
            memory.anchor.close()
