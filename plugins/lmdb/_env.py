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
* *Never use an environment after ``fork()``*: a child that inherited one gets
  ``BackendUnavailable`` from the parent's managers instead of a corrupt file.
* *A damaged file must not crash the process*: a data file shorter than its last
  page is refused at open (reading past its end would raise SIGBUS).
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
# transactions (buffers=True) return memoryviews.  torpor never opens one, so every
# value it reads is bytes; these aliases say so once instead of a cast per read.
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


class _Gate:
    """Shared for transactions, exclusive for map resizes, closing and forks.

    Entering and leaving cost one plain lock each (this is on every read); the
    condition variable is used only while an exclusive user waits or runs, which is
    rare.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._active = 0
        self._exclusive = False
        self._frozen = False

    def enter(self) -> None:
        lock = self._lock
        lock.acquire()
        try:
            while self._exclusive:
                self._cond.wait()
            self._active += 1
        finally:
            lock.release()

    def exit(self) -> None:
        lock = self._lock
        lock.acquire()
        self._active -= 1
        if self._exclusive and not self._active:
            self._cond.notify_all()
        lock.release()

    def exclusive(self, action: Callable[[], T]) -> T:
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


class SharedEnv:
    """An open environment with its gate; use :meth:`read`, :meth:`write`, :meth:`get`."""

    def __init__(self, path: Path, config: EnvConfig) -> None:
        self.path = path
        self.config = config
        self.env = _open(path, config, config.map_size)
        self.gate = _Gate()
        self.refs = 0
        self.pid = os.getpid()
        self.forked = False  # set in a child process after fork()
        self.quiet_at_fork = False  # no transaction was open when this process forked
        self.closed = False
        self.broken: str | None = None  # why it can no longer be used, if it cannot
        # Called with the new environment after a reopen (db handles are per handle).
        self.reopeners: dict[int, Callable[[lmdb.Environment], None]] = {}

    def _enter(self) -> None:
        if self.forked:
            raise BackendUnavailable(
                f"this LMDB environment was opened by process {self.pid} and cannot be used "
                "after fork(); open a new manager in the child process"
            )
        self.gate.enter()
        if self.closed or self.broken:
            self.gate.exit()
            if self.closed:
                raise ManagerClosed("this lmdb backend is closed; open a new manager")
            raise BackendUnavailable(str(self.broken))

    def check(self) -> None:
        """Raise what a transaction would raise now (forked, closed, broken)."""
        self._enter()
        self.gate.exit()

    def get(self, key: bytes, db: Db) -> bytes | None:
        """One value in its own read transaction: ``read`` without the closure, for the
        hottest path (every ``get`` of a session)."""
        self._enter()
        try:
            with self.env.begin(db=db) as txn:
                return txn.get(key)
        except lmdb.MapResizedError:
            pass
        except lmdb.Error as exc:
            raise translate(exc) from exc
        finally:
            self.gate.exit()
        self.gate.exclusive(self._adopt)
        return self.get(key, db)

    def read(self, body: Callable[[Txn], T]) -> T:
        return self._run(body, write=False)

    def write(self, body: Callable[[Txn], T]) -> T:
        """Run ``body`` in a write transaction, one commit; retried (``body`` called
        again) when the map had to grow.  An exception from ``body`` aborts and
        propagates."""
        return self._run(body, write=True)

    def _run(self, body: Callable[[Txn], T], *, write: bool) -> T:
        while True:
            self._enter()
            grow = False
            try:
                with self.env.begin(write=write) as txn:
                    return body(txn)
            except lmdb.MapFullError:
                grow = True
            except lmdb.MapResizedError:
                pass
            except lmdb.Error as exc:
                raise translate(exc) from exc
            finally:
                self.gate.exit()
            self.gate.exclusive(self._grow if grow else self._adopt)

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
                except lmdb.Error as exc:
                    raise translate(exc) from exc

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
        """Close the environment (with the gate held exclusively)."""
        self.closed = True
        try:
            self.env.close()
        except lmdb.Error:
            log.warning("closing the LMDB environment %s failed", self.path, exc_info=True)


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
            f"LMDB has no free reader slot ({exc}); raise max_readers, or open fewer "
            "concurrent readers"
        )
    if isinstance(exc, lmdb.ReadonlyError):
        return BackendUnavailable(f"the LMDB store is read-only here ({name}: {exc})")
    return BackendUnavailable(f"LMDB failed: {name}: {exc}")


def _open(path: Path, config: EnvConfig, map_size: int) -> lmdb.Environment:
    sync, metasync = DURABILITY[config.durability]
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
    anything reads a page past its end, which would kill the process with SIGBUS."""
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
