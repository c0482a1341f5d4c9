"""One LMDB environment per path and process, shared by the managers that use it.

* *Never open one environment twice in a process* (LMDB's rule; its locks belong to
  the process): environments are shared per real path and reference-counted; several
  managers (namespaces) can use one.  They must agree on the storage options
  (durability, map size, readers, databases): a second manager asking for others gets
  ``ConfigError`` instead of silently running with the first one's.
* *Closing never waits for a transaction* (an urgent close must return within 100 ms):
  the last release closes the environment at once if none of this process's
  transactions is running, and otherwise marks it *closing*: new transactions are
  refused and the last running one closes it as it leaves.  The stragglers cannot
  commit (see ``_env.py``).  Meanwhile the environment stays registered, because LMDB
  forbids a second handle on it in this process: an open with the same storage
  options takes it back (the close is called off; the stragglers still fail, since
  their managers are closed), and an open with other options waits for the close
  (at most ``CLOSE_WAIT_S``, then ``ConfigError``).
* *Fork*: the parent's managers are unusable in a child (``BackendUnavailable``), but
  the child may open managers of its own on the same path, as gunicorn workers forked
  after ``--preload`` do.  py-lmdb refuses a second handle on files it has open, and a
  child inherits the parent's handle, so the child closes that handle first.  Closing
  it in the child unmaps the child's copy of the map, closes the child's copies of the
  file descriptors (LMDB's fcntl locks belong to the parent, not to them) and clears
  reader slots owned by the child's pid (there are none).  But it also aborts the
  transactions the handle had open, and aborting a read transaction frees its reader
  slot in the lock file, which is shared with the parent: that would let a writer
  reuse pages a parent's reader still reads.  So before a fork, every environment's
  gate is frozen until its transactions finish (at most ``FORK_WAIT_S``); a child
  forked while one was still open refuses to reopen that path with a clear error.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import weakref
from pathlib import Path
from typing import Final

import lmdb

from torpor.errors import BackendUnavailable, ConfigError
from torpor.plugins.lmdb._env import EnvConfig, SharedEnv, translate

__all__ = ["CLOSE_WAIT_S", "FORK_WAIT_S", "acquire_env", "release_env"]

FORK_WAIT_S: Final = 2.0
CLOSE_WAIT_S: Final = 30.0

_ENVS: dict[Path, SharedEnv] = {}
_INHERITED: dict[Path, SharedEnv] = {}  # in a forked child: the parent's environments
_ENVS_LOCK = threading.Lock()
_LIVE: weakref.WeakSet[SharedEnv] = weakref.WeakSet()


def acquire_env(path: Path, config: EnvConfig) -> SharedEnv:
    """The process's environment for ``path``, opened on first use (files 0600)."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        real = path.resolve()
    except OSError as exc:
        raise BackendUnavailable(f"cannot create the LMDB folder {path}: {exc}") from exc
    deadline = time.monotonic() + CLOSE_WAIT_S
    while True:
        closing: SharedEnv | None = None
        with _ENVS_LOCK:
            shared = _ENVS.get(real)
            if shared is None:
                _close_inherited(real)
                shared = _ENVS[real] = SharedEnv(real, config)
                _LIVE.add(shared)
            elif shared.refs == 0 and (shared.config != config or shared.broken):
                closing = shared  # its close waits for a straggler: wait for it too
            elif shared.config != config:
                raise _config_clash(real, shared.config, config)
            elif shared.refs == 0:  # closing: take it back
                shared.closing = False
                shared.gate.on_idle = None
            if closing is None:
                shared.refs += 1
                return shared
        if not closing.closed_event.wait(max(deadline - time.monotonic(), 0)):
            raise ConfigError(
                f"the LMDB store {real} is still closing in this process: a transaction of "
                f"a closed manager has been running for {CLOSE_WAIT_S:.0f} s.  It can be "
                "opened again with the same storage options now, with others once that "
                "transaction has finished"
            )


def _config_clash(path: Path, have: EnvConfig, want: EnvConfig) -> ConfigError:
    differing = [f for f in EnvConfig._fields if getattr(have, f) != getattr(want, f)]
    details = ", ".join(f"{f}={getattr(want, f)!r} (open: {getattr(have, f)!r})" for f in differing)
    return ConfigError(
        f"the LMDB store {path} is already open in this process with other storage "
        f"options: {details}.  One store has one configuration: open every manager on "
        f"it with the same {', '.join(differing)}"
    )


def release_env(shared: SharedEnv) -> None:
    """Drop one reference; the last one closes the environment (never after fork), at
    once or, if transactions are running, when the last one leaves.  Never waits."""
    with _ENVS_LOCK:
        shared.refs -= 1
        if shared.refs > 0:
            return
        if shared.forked:  # the parent's handle: the child never closes it
            if _ENVS.get(shared.path) is shared:
                del _ENVS[shared.path]
            return
        shared.closing = True
        shared.gate.on_idle = functools.partial(_close_when_idle, weakref.ref(shared))
        _close_if_idle(shared)


def _close_when_idle(ref: weakref.ref[SharedEnv]) -> None:
    """The last transaction left an environment that may be closing."""
    shared = ref()
    if shared is not None:
        with _ENVS_LOCK:
            _close_if_idle(shared)


def _close_if_idle(shared: SharedEnv) -> None:
    """(Under ``_ENVS_LOCK``.)  Close a released environment unless a transaction
    still runs (then the last one to leave calls this again)."""
    if shared.refs or not shared.closing or shared.closed or shared.forked:
        return
    if shared.gate.close_if_idle(shared.close_now) and _ENVS.get(shared.path) is shared:
        del _ENVS[shared.path]


def _close_inherited(real: Path) -> None:
    """In a forked child: close the parent's handle on ``real`` before opening our own
    (py-lmdb refuses a second handle on the same files)."""
    inherited = _INHERITED.get(real)
    if inherited is None:
        return
    if not inherited.quiet_at_fork:
        raise BackendUnavailable(
            f"this process was forked while its parent had a transaction open on the LMDB "
            f"store {real}; it cannot open the store safely.  Fork while the parent is idle "
            "(or before it opens the store)"
        )
    try:
        inherited.env.close()
    except lmdb.Error as exc:
        raise translate(exc) from exc
    del _INHERITED[real]


def _before_fork() -> None:
    for shared in list(_LIVE):
        if not shared.forked and not shared.closed:
            shared.quiet_at_fork = shared.gate.freeze(FORK_WAIT_S)


def _after_fork_in_parent() -> None:
    for shared in list(_LIVE):
        shared.gate.thaw()


def _after_fork_in_child() -> None:
    # The lock may have been held by another thread of the parent: make a new one.
    global _ENVS_LOCK
    _ENVS_LOCK = threading.Lock()
    _ENVS.clear()
    for shared in list(_LIVE):
        if not shared.forked and not shared.closed:  # open in the parent (even mid-release)
            _INHERITED[shared.path] = shared
        shared.forked = True


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
