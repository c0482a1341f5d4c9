"""One LMDB environment per path and process, and safe access to it.

LMDB's rules, and how this module keeps them:

* *Never open one environment twice in a process*: environments are shared per real
  path, reference-counted; several managers (namespaces) can use one.
* *``set_mapsize`` only while no transaction is active in the process*: every
  transaction passes a :class:`_Gate`; growing the map takes it exclusively.
* *A full map is not an error for users*: writes that hit ``MapFullError`` are
  aborted, the map doubles, the write is retried.  Another process's growth
  (``MapResizedError``) is adopted with ``set_mapsize(0)``.
* *Never use an environment after ``fork()``*: a child that inherited one gets
  ``BackendUnavailable`` on every call instead of a corrupt file.
* *Engine errors never reach users raw*: they become ``BackendUnavailable``.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import lmdb

from torpor.errors import BackendUnavailable, ConfigError

__all__ = ["DURABILITY", "Db", "SharedEnv", "Txn", "acquire_env", "release_env"]

T = TypeVar("T")

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


class _Gate:
    """Shared for transactions, exclusive for map resizes.

    Entering and leaving cost one plain lock each (this is on every read); the
    condition variable is used only while a resize waits or runs, which is rare.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._active = 0
        self._resizing = False

    def enter(self) -> None:
        lock = self._lock
        lock.acquire()
        try:
            while self._resizing:
                self._cond.wait()
            self._active += 1
        finally:
            lock.release()

    def exit(self) -> None:
        lock = self._lock
        lock.acquire()
        self._active -= 1
        if self._resizing and not self._active:
            self._cond.notify_all()
        lock.release()

    def exclusive(self, action: Callable[[], None]) -> None:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._resizing = True
            while self._active:
                self._cond.wait()
            try:
                action()
            finally:
                self._resizing = False
                self._cond.notify_all()


class SharedEnv:
    """An open environment with its gate; use :meth:`read` and :meth:`write`."""

    def __init__(self, path: Path, env: lmdb.Environment) -> None:
        self.path = path
        self.env = env
        self.gate = _Gate()
        self.refs = 0
        self.pid = os.getpid()
        self.forked = False  # set in a child process by _forget_after_fork
        _LIVE.add(self)

    def check(self) -> None:
        if self.forked:
            raise BackendUnavailable(
                f"this LMDB environment was opened by process {self.pid} and cannot be used "
                "after fork(); open a new manager in the child process"
            )

    def get(self, key: bytes, db: Db) -> bytes | None:
        """One value in its own read transaction: ``read`` without the closure, for the
        hottest path (every ``get`` of a session)."""
        if self.forked:
            self.check()
        gate = self.gate
        gate.enter()
        try:
            with self.env.begin(db=db) as txn:
                return txn.get(key)
        except lmdb.MapResizedError:
            pass
        except lmdb.Error as exc:
            raise _unavailable(exc) from exc
        finally:
            gate.exit()
        self._adopt_size()
        return self.get(key, db)

    def read(self, body: Callable[[Txn], T]) -> T:
        return self._run(body, write=False)

    def write(self, body: Callable[[Txn], T]) -> T:
        """Run ``body`` in a write transaction; retried (body called again) when the map
        had to grow.  An exception from ``body`` aborts and propagates."""
        return self._run(body, write=True)

    def _run(self, body: Callable[[Txn], T], *, write: bool) -> T:
        self.check()
        while True:
            self.gate.enter()
            full = False
            try:
                with self.env.begin(write=write) as txn:
                    return body(txn)
            except lmdb.MapFullError:
                full = True
            except lmdb.MapResizedError:
                pass
            except lmdb.Error as exc:
                raise _unavailable(exc) from exc
            finally:
                self.gate.exit()
            if full:
                self.gate.exclusive(self._grow)
            else:
                self._adopt_size()

    def _grow(self) -> None:
        self.env.set_mapsize(self.env.info()["map_size"] * 2)

    def _adopt_size(self) -> None:
        self.gate.exclusive(lambda: self.env.set_mapsize(0))


def _unavailable(exc: lmdb.Error) -> BackendUnavailable:
    return BackendUnavailable(f"LMDB failed: {type(exc).__name__}: {exc}")


_ENVS: dict[Path, SharedEnv] = {}
_ENVS_LOCK = threading.Lock()
_LIVE: weakref.WeakSet[SharedEnv] = weakref.WeakSet()


def acquire_env(
    path: Path, *, map_size: int, durability: str, max_readers: int, max_dbs: int
) -> SharedEnv:
    """The process's environment for ``path``, opened on first use (files 0600)."""
    if durability not in DURABILITY:
        raise ConfigError(f"durability must be one of {', '.join(DURABILITY)}, not {durability!r}")
    sync, metasync = DURABILITY[durability]
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        real = path.resolve()
    except OSError as exc:
        raise BackendUnavailable(f"cannot create the LMDB folder {path}: {exc}") from exc
    with _ENVS_LOCK:
        shared = _ENVS.get(real)
        if shared is None or shared.forked:
            try:
                env = lmdb.open(
                    str(real),
                    map_size=map_size,
                    max_dbs=max_dbs,
                    max_readers=max_readers,
                    sync=sync,
                    metasync=metasync,
                    mode=0o600,
                    subdir=True,
                    readahead=False,
                )
                env.reader_check()  # clear reader slots left by killed processes
            except lmdb.Error as exc:
                raise _unavailable(exc) from exc
            shared = _ENVS[real] = SharedEnv(real, env)
        shared.refs += 1
        return shared


def release_env(shared: SharedEnv) -> None:
    """Drop one reference; the last one closes the environment (never after fork)."""
    with _ENVS_LOCK:
        shared.refs -= 1
        if shared.refs > 0:
            return
        if _ENVS.get(shared.path) is shared:
            del _ENVS[shared.path]
    if not shared.forked:
        shared.gate.exclusive(shared.env.close)


def _forget_after_fork() -> None:
    # The child must not close (or reuse) its parent's environments: forget them.  The
    # lock may have been held by another thread of the parent: make a new one.
    global _ENVS_LOCK
    _ENVS_LOCK = threading.Lock()
    _ENVS.clear()
    for shared in _LIVE:
        shared.forked = True


os.register_at_fork(after_in_child=_forget_after_fork)
