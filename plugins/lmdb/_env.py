"""Safe access to one open LMDB environment (see ``_envs.py`` for sharing one per path
and process, and for fork).

LMDB's rules, and how this module keeps them:

* *``set_mapsize`` only while no transaction is active in the process*: every
  transaction passes a :class:`_Gate`; growing the map takes it exclusively.
* *A full map is not an error for users*: writes that hit ``MapFullError`` are
  aborted, the map doubles, the write is retried.  Another process's growth
  (``MapResizedError``) is adopted with ``set_mapsize(0)``.  If the larger map cannot
  be mapped (no memory or address space), LMDB has already dropped the old map: the
  environment is closed and reopened at its previous size, and the write fails with
  ``BackendUnavailable``; later reads, and writes that fit, keep working.
* *Closing never waits for a transaction* (docs/contract.md §9: ``close(urgent=True)`` returns
  within 100 ms): a close that finds transactions of this process still running (a
  slow ``update`` function, a write queued behind another process's writer lock)
  refuses new ones and leaves the actual ``mdb_env_close`` to the last one to leave
  (see ``_envs.py``).  Those stragglers cannot commit: the manager makes their
  transaction functions raise ``ManagerClosed``, the backend checks its closed flag
  before every commit, and long operations (an index backfill, the adoption of an
  old store) look at it every few hundred records.
* *A bounded reader table*: every read transaction holds one of the environment's
  ``max_readers`` slots, which all processes share; when none is free LMDB fails the
  read (``MDB_READERS_FULL``).  So one process lets at most ``max(1, max_readers //
  2)`` of its threads hold one at a time (``reader_limit``); the others wait for a
  free slot (read transactions are short: one per batch or lookup) instead of
  failing.  Why half: a single busy process (a thread pool larger than the table)
  can then never take every slot from the others, and still gets 63 of the default
  126, more than a process usually reads with at once; several busy processes need
  a larger ``max_readers``.  If other processes fill the table anyway, a read first
  clears the slots of killed processes (LMDB's reader check), then fails with
  ``BackendUnavailable`` naming ``max_readers``.  Writes hold no reader slot.
* *Never use an environment after ``fork()``*: a child that inherited one gets
  ``BackendUnavailable`` from the parent's managers instead of a corrupt file.
* *A damaged file must not crash the process* (as far as a cheap check at open can
  tell; see ``_layout.py`` for what LMDB cannot detect): a data file shorter than its
  last page is refused at open (reading past its end would raise SIGBUS), and so is
  an existing data file too short to hold LMDB's two meta pages (an empty or cut
  file that LMDB would silently start afresh over).
* *Engine errors never reach users raw*: they become ``BackendUnavailable`` (or
  ``ConfigError`` where an option is to blame), with the original as ``__cause__``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeVar

import lmdb

from torpor.errors import BackendUnavailable, ConfigError, ManagerClosed, TorporError

__all__ = ["DURABILITY", "Db", "EnvConfig", "SharedEnv", "Txn", "translate"]

T = TypeVar("T")
log = logging.getLogger("torpor.lmdb")

# py-lmdb's stubs type every value as ``bytes | memoryview`` because buffer
# transactions (buffers=True) return memoryviews.  Only the ids walk opens one (see
# ``_walk.py``: it checks records in place, copying none); everywhere else every
# value read is bytes, and these aliases say so once instead of a cast per read.
Txn = Any
Db = Any

DURABILITY: Final = {
    # mode: (sync, metasync).  A killed *process* loses nothing in any mode: committed
    # pages are in the OS page cache.  The modes differ on an OS crash or power loss.
    "sync": (True, True),  # every commit is on disk when it returns
    "nometasync": (True, False),  # the last commit may be undone; never corrupt
    "nosync": (False, False),  # commits since the last flush may be lost; never corrupt
}


class EnvConfig(NamedTuple):
    """The storage options every manager of one environment must agree on."""

    durability: str
    map_size: int
    max_readers: int
    max_dbs: int


def reader_limit(max_readers: int) -> int:
    """How many read transactions one process may hold at once: half of the shared
    reader table, so that other processes always find slots too."""
    return max(1, max_readers // 2)


class _Gate:
    """Shared for transactions, exclusive for map resizes, closing and forks; and a
    bound on this process's concurrent read transactions (see ``reader_limit``).

    Entering and leaving cost one plain lock each (this is on every read); the
    condition variable is used only while someone waits (an exclusive user, a reader
    with no free slot), which is rare.  ``on_idle``, when set, is called (outside the
    lock) whenever the last transaction leaves: a deferred close uses it.
    """

    def __init__(self, readers: int) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._active = 0
        self._readers = 0
        self._max_readers = readers
        self._waiting = 0  # threads waiting in enter()
        self._exclusive = False
        self._frozen = False
        self.on_idle: Callable[[], None] | None = None

    @property
    def active(self) -> int:
        """Transactions of this process running now."""
        return self._active

    def enter(self, read: bool) -> None:
        lock = self._lock
        lock.acquire()
        try:
            while self._exclusive or (read and self._readers >= self._max_readers):
                self._waiting += 1
                try:
                    self._cond.wait()
                finally:
                    self._waiting -= 1
            self._active += 1
            self._readers += read
        finally:
            lock.release()

    def exit(self, read: bool) -> None:
        lock = self._lock
        lock.acquire()
        self._active -= 1
        self._readers -= read
        if (self._exclusive and not self._active) or (read and self._waiting):
            self._cond.notify_all()
        idle = self.on_idle if not self._active else None
        lock.release()
        if idle is not None:
            idle()

    def exclusive(self, action: Callable[[], T]) -> T:
        try:
            with self._cond:
                while self._exclusive:
                    self._cond.wait()
                self._exclusive = True
                try:
                    while self._active:
                        self._cond.wait()
                    return action()
                finally:
                    self._exclusive = False
                    self._cond.notify_all()
        finally:
            self._idle()

    def close_if_idle(self, action: Callable[[], None]) -> bool:
        """Run ``action`` (a close) now if no transaction is running or waiting to
        run exclusively; False (nothing done) otherwise.  Never waits."""
        with self._cond:
            if self._active or self._exclusive:
                return False
            self.on_idle = None
            action()
            return True

    def freeze(self, timeout_s: float) -> bool:
        """Before a fork: stop new transactions and wait (bounded) for the running
        ones.  True if none is running; :meth:`thaw` undoes it either way."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._exclusive:
                if not self._cond.wait(max(deadline - time.monotonic(), 0)):
                    return False
            self._exclusive = self._frozen = True
            while self._active:
                if not self._cond.wait(max(deadline - time.monotonic(), 0)):
                    return False
            return True

    def thaw(self) -> None:
        with self._cond:
            if self._frozen:
                self._exclusive = self._frozen = False
                self._cond.notify_all()
        self._idle()

    def _idle(self) -> None:
        """After an exclusive section: a close deferred meanwhile may run now."""
        idle = self.on_idle
        if idle is not None and not self._active:
            idle()


class SharedEnv:
    """An open environment with its gate; use :meth:`read`, :meth:`write`, :meth:`get`."""

    def __init__(self, path: Path, config: EnvConfig) -> None:
        self.path = path
        self.config = config
        self.env = _open(path, config, config.map_size)
        self.gate = _Gate(reader_limit(config.max_readers))
        self.refs = 0
        self.pid = os.getpid()
        self.forked = False  # set in a child process after fork()
        self.quiet_at_fork = False  # no transaction was open when this process forked
        self.closing = False  # released by every manager; closes when the last txn ends
        self.closed = False
        self.closed_event = threading.Event()
        self.broken: str | None = None  # why it can no longer be used, if it cannot
        # Called with the new environment after a reopen (db handles are per handle).
        self.reopeners: dict[int, Callable[[lmdb.Environment], None]] = {}
        # Database handles by namespace, opened once per environment: a manager opened
        # again on a namespace needs no exclusive transaction (so it never waits for a
        # straggler of a manager closed urgently).  Cleared on reopen.
        self.layouts: dict[str, Any] = {}

    def _enter(self, read: bool) -> None:
        if self.forked:
            raise BackendUnavailable(
                f"this LMDB environment was opened by process {self.pid} and cannot be used "
                "after fork(); open a new manager in the child process"
            )
        self.gate.enter(read)
        if self.closed or self.closing or self.broken:
            self.gate.exit(read)
            if self.broken and not self.closed:
                raise BackendUnavailable(str(self.broken))
            raise ManagerClosed("this lmdb backend is closed; open a new manager")

    def check(self) -> None:
        """Raise what a transaction would raise now (forked, closed, broken)."""
        self._enter(False)
        self.gate.exit(False)

    def get(self, key: bytes, db: Db) -> bytes | None:
        """One value in its own read transaction: ``read`` without the closure, for the
        hottest path (every ``get`` of a session)."""
        self._enter(True)
        try:
            with self.env.begin(db=db) as txn:
                return txn.get(key)
        except (lmdb.MapResizedError, lmdb.ReadersFullError):
            pass
        except lmdb.Error as exc:
            raise translate(exc) from exc
        finally:
            self.gate.exit(True)
        # The slow path: a map another process grew, or no free reader slot.
        found: bytes | None = self._run(lambda txn: txn.get(key, db=db), write=False)
        return found

    def get_pair(self, key: bytes, db: Db, other: Db) -> tuple[bytes | None, bytes | None]:
        """:meth:`get` of ``key`` in two databases, from one snapshot (the second
        value is read only if there is a first)."""
        self._enter(True)
        try:
            with self.env.begin(db=db) as txn:
                found = txn.get(key)
                return found, (None if found is None else txn.get(key, db=other))
        except (lmdb.MapResizedError, lmdb.ReadersFullError):
            pass
        except lmdb.Error as exc:
            raise translate(exc) from exc
        finally:
            self.gate.exit(True)

        def both(txn: Txn) -> tuple[bytes | None, bytes | None]:
            found = txn.get(key, db=db)
            return found, (None if found is None else txn.get(key, db=other))

        return self._run(both, write=False)

    def read(self, body: Callable[[Txn], T], *, buffers: bool = False) -> T:
        """Run ``body`` in a read transaction.  With ``buffers`` its values and keys are
        memoryviews into the map, valid only until the transaction ends or the cursor
        moves: ``body`` must copy whatever it returns."""
        return self._run(body, write=False, buffers=buffers)

    def write(self, body: Callable[[Txn], T]) -> T:
        """Run ``body`` in a write transaction, one commit; retried (``body`` called
        again) when the map had to grow.  An exception from ``body`` aborts and
        propagates."""
        return self._run(body, write=True)

    def _run(self, body: Callable[[Txn], T], *, write: bool, buffers: bool = False) -> T:
        read = not write
        cleared = False
        while True:
            self._enter(read)
            grow = False
            try:
                begin = self.env.begin
                with begin(write=write, buffers=True) if buffers else begin(write=write) as txn:
                    return body(txn)
            except lmdb.MapFullError:
                grow = True
            except lmdb.MapResizedError:
                pass
            except lmdb.ReadersFullError as exc:
                # Slots of killed processes are freed by a reader check: once, then
                # the table really is full (other processes' readers).
                if cleared or not self._clear_stale_readers():
                    raise translate(exc) from exc
                cleared = True
                continue
            except lmdb.Error as exc:
                raise translate(exc) from exc
            finally:
                self.gate.exit(read)
            self.gate.exclusive(self._grow if grow else self._adopt)

    def _clear_stale_readers(self) -> int:
        try:
            return int(self.env.reader_check())
        except lmdb.Error:
            return 0

    def exclusive_write(self, body: Callable[[Txn], T]) -> T:
        """``write`` with no other transaction of this process running (for opening
        database handles, which LMDB does not allow concurrently)."""
        self.check()

        def run() -> T:
            while True:
                try:
                    with self.env.begin(write=True) as txn:
                        return body(txn)
                except lmdb.MapFullError:
                    self._grow()
                except lmdb.MapResizedError:  # another process grew the map
                    self._adopt()
                except lmdb.Error as exc:
                    raise translate(exc) from exc
                if self.broken:  # the handle could not be reopened after a remap
                    raise BackendUnavailable(self.broken)

        return self.gate.exclusive(run)

    # -- map size (called with the gate held exclusively) ------------------------------
    def _grow(self) -> None:
        self._remap(2, "grow the map")

    def _adopt(self) -> None:
        self._remap(0, "adopt the map size another process set")

    def _remap(self, factor: int, what: str) -> None:
        """Map ``factor`` times the current size (0: the size in the file's header)."""
        if self.closed or self.broken:
            return  # the retry reports it
        try:
            old = self.env.info()["map_size"]
        except lmdb.Error as exc:
            raise translate(exc) from exc
        try:
            self.env.set_mapsize(old * factor)
        except lmdb.Error as exc:
            # LMDB unmaps the old map before mapping the new one: the handle is dead.
            self._reopen(old)
            raise BackendUnavailable(
                f"LMDB could not {what} ({type(exc).__name__}: {exc}); nothing was "
                "written.  The process is short of memory or address space (ulimit -v), "
                "or the disk is full; the store stays usable for what fits"
            ) from exc

    def _reopen(self, map_size: int) -> None:
        try:
            self.env.close()
        except lmdb.Error:
            log.debug("closing a dead LMDB handle failed", exc_info=True)
        self.layouts.clear()  # their handles belonged to the closed one
        try:
            self.env = _open(self.path, self.config, map_size)
            for reopen in list(self.reopeners.values()):
                reopen(self.env)
        except (TorporError, lmdb.Error) as exc:
            self.broken = (
                f"the LMDB environment {self.path} could not be reopened after a failed map "
                f"resize ({exc}); close this manager and open a new one"
            )

    def close_now(self) -> None:
        """Close the environment (no transaction of this process may be running)."""
        self.closed = True
        try:
            self.env.close()
        except lmdb.Error:
            log.warning("closing the LMDB environment %s failed", self.path, exc_info=True)
        finally:
            self.closed_event.set()


def translate(exc: lmdb.Error) -> TorporError:
    """An lmdb exception as the torpor error to raise (``raise ... from exc``)."""
    name = type(exc).__name__
    if isinstance(exc, lmdb.DbsFullError):
        return ConfigError(
            f"LMDB has no room for more named databases ({exc}); raise the max_dbs option "
            "(every namespace uses 11)"
        )
    if isinstance(exc, lmdb.ReadersFullError):
        return BackendUnavailable(
            f"LMDB has no free reader slot ({exc}): other processes hold the rest of the "
            "reader table (this one holds at most half of it).  Raise max_readers (in "
            "every process that opens the store), or open fewer concurrent readers"
        )
    if isinstance(exc, lmdb.InvalidError):
        return BackendUnavailable(
            f"the LMDB data file is not an LMDB file, or its header is damaged ({exc}); "
            "restore it from a backup"
        )
    if isinstance(exc, lmdb.ReadonlyError):
        return BackendUnavailable(f"the LMDB store is read-only here ({name}: {exc})")
    return BackendUnavailable(f"LMDB failed: {name}: {exc}")


def _open(path: Path, config: EnvConfig, map_size: int) -> lmdb.Environment:
    sync, metasync = DURABILITY[config.durability]
    _check_not_cut(path)
    try:
        env = lmdb.open(
            str(path),
            map_size=map_size,
            max_dbs=config.max_dbs,
            max_readers=config.max_readers,
            sync=sync,
            metasync=metasync,
            mode=0o600,
            subdir=True,
            readahead=False,
            max_spare_txns=0,  # a cached read transaction would hold a reader slot
        )
    except lmdb.Error as exc:
        raise translate(exc) from exc
    except (OverflowError, OSError) as exc:
        raise BackendUnavailable(f"cannot open the LMDB environment {path}: {exc}") from exc
    try:
        _check_length(path, env)
        env.reader_check()  # clear reader slots left by killed processes
    except BaseException as exc:
        env.close()
        if isinstance(exc, lmdb.Error):
            raise translate(exc) from exc
        raise
    return env


def _check_length(path: Path, env: lmdb.Environment) -> None:
    """A data file shorter than its last page is damaged (truncated): refuse it before
    anything reads a page past its end, which would kill the process with SIGBUS.
    (Damage inside the file cannot be detected this cheaply: see ``_layout.py``.)"""
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    data = path / "data.mdb"
    try:
        actual = data.stat().st_size
    except OSError as exc:
        raise BackendUnavailable(f"cannot read the LMDB data file {data}: {exc}") from exc
    if actual < needed:
        raise BackendUnavailable(
            f"the LMDB data file {data} is damaged: it has {actual} bytes but its last "
            f"page ends at byte {needed} (truncated?); restore it from a backup"
        )


# The smallest valid data file: LMDB writes its two meta pages when it creates one, and
# no platform LMDB runs on has pages smaller than 4 KiB.
_MIN_DATA_BYTES: Final = 2 * 4096


def _check_not_cut(path: Path) -> None:
    """An existing data file too short for LMDB's two meta pages is damaged (emptied or
    cut short): LMDB would take an empty one for a new store and write fresh databases
    over it.  A missing one is a new store."""
    data = path / "data.mdb"
    try:
        size = data.stat().st_size
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BackendUnavailable(f"cannot read the LMDB data file {data}: {exc}") from exc
    if size >= _MIN_DATA_BYTES or _being_created(path / "lock.mdb"):
        return
    raise BackendUnavailable(
        f"the LMDB data file {data} is empty or cut short ({size} bytes; even a new "
        f"store has {_MIN_DATA_BYTES}), so it is damaged and torpor will not write a fresh "
        "store over it.  Restore it from a backup, or move it (and lock.mdb) away to "
        "start afresh"
    )


def _being_created(lock_file: Path) -> bool:
    """Whether another process has the environment open (so a short data file may be
    one it is creating right now).  LMDB's own protocol: every process that has the
    environment open holds a shared ``fcntl`` lock on the first byte of the lock file,
    and the one creating the store holds it exclusively until the data file has its
    meta pages (other openers wait for that).  Only called when this process does not
    have the environment open (closing our descriptor drops our own locks on it)."""
    try:
        import fcntl
    except ImportError:  # no fcntl (Windows): no such race to allow for
        return False
    try:
        fd = os.open(lock_file, os.O_RDWR)
    except OSError:
        return False  # no lock file: nobody has it open
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0, os.SEEK_SET)
    except OSError:
        return True  # held: a live process has it open
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0, os.SEEK_SET)
        return False
    finally:
        os.close(fd)
