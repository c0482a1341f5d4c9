"""The backend contract: every hook a torpor plugin can implement.

This module is the plugin author's reference.  A *backend* is a plain object whose
methods are named after these hooks (decorating them with ``torpor.hookimpl`` is
optional: any callable attribute starting with ``torpor_`` counts).  It is built by a
factory registered under the entry-point group ``torpor.backends``.

How the manager uses a backend
==============================

The manager owns every rule of DESIGN.md: id validation, expiry, versions, the
hibernation criteria, size limits, encoding.  A backend only keeps
:class:`torpor.Record` values and, optionally, indexes over them.  That split keeps
the semantics identical on every engine, and makes a backend small:

* **Required**: ``torpor_fetch``, ``torpor_store``, ``torpor_delete``, ``torpor_ids``.
  With only these four, every manager call works through the core's fallbacks.
* **Optional**: each remaining data hook maps to a :class:`torpor.Capability`.  A
  backend that implements one must claim the capability in ``torpor_capabilities``,
  and the conformance kit then tests it natively.  Claiming a capability without the
  hook (or the reverse) is refused when the manager opens.

Values a backend gives back
===========================

Wherever a hook returns a stored session it may return either the ``bytes`` of
:attr:`Record.blob` exactly as stored, or a :class:`Record`.  The manager never hands a
backend's objects to users (``Record.to_session`` copies), so an in-process backend can
return its records without copying.

Errors
======

A backend translates its engine's exceptions into ``torpor.errors.BackendUnavailable``
(keeping the original as ``__cause__``); nothing raw may reach a user.

Thread safety
=============

Hooks are called from any thread, concurrently.  Backends must be thread-safe.

Extension plugins
=================

Plugins from the entry-point group ``torpor.plugins`` (enabled with the ``plugins``
option) may wrap the data hooks with ``@torpor.hookimpl(wrapper=True)``, e.g. to count
calls or time them, and may observe ``torpor_event``.  When no wrapper is registered,
the manager binds the backend's methods once and calls them directly: pluggy's hook
dispatch costs about as much as a whole LMDB read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from torpor._capabilities import BackendStats, Capability
    from torpor._clock import Clock
    from torpor._events import LifecycleEvent
    from torpor._mailbox import Mailbox
    from torpor._record import Record

__all__ = ["DELETE", "PROJECT", "BatchFn", "TransactFn", "hookimpl", "hookspec"]

PROJECT = "torpor"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class _Delete:
    """Sentinel returned by a transaction function: delete the session."""

    _instance: _Delete | None = None

    def __new__(cls) -> _Delete:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "torpor.DELETE"


DELETE = _Delete()

TransactFn = Callable[["Record | bytes | None"], "Record | _Delete | None"]
BatchFn = Callable[[str, "Record | bytes | None"], "Record | _Delete | None"]


# ---------------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------------
@hookspec(firstresult=True)
def torpor_capabilities() -> Iterable[Capability]:  # type: ignore[empty-body]
    """Return the capabilities this backend implements natively.

    Optional; a backend without it claims none.  Called once, when the manager opens.
    """


@hookspec
def torpor_open(clock: Clock, options: Mapping[str, Any]) -> None:
    """The manager has registered the backend and is about to use it.

    Optional.  ``clock`` is the manager's clock (milliseconds); ``options`` the
    resolved manager options (read-only).  Raise ``BackendUnavailable`` if the engine
    cannot be reached.
    """


@hookspec
def torpor_close(urgent: bool) -> None:
    """Release every resource.  Called once, after the sweeper has stopped.

    Optional.  With ``urgent`` the backend should not wait for anything it can drop
    safely (a flush it would otherwise force, a connection pool drain); writes it has
    acknowledged must still be kept.
    """


@hookspec(firstresult=True)
def torpor_touch_resolution_ms() -> int:  # type: ignore[empty-body]
    """The coarsest interval at which reads should refresh ``last_accessed``.

    Optional (default 0: every read refreshes it).  A backend for which a write costs
    a durable commit returns e.g. 1000: a ``get`` then refreshes ``last_accessed`` only
    when it is at least that old, and expiry and idleness are exact to within that
    resolution.  Users can override it with the ``touch_resolution_ms`` option.
    """


# ---------------------------------------------------------------------------------
# Required data hooks
# ---------------------------------------------------------------------------------
@hookspec(firstresult=True)
def torpor_fetch(session_id: str) -> Record | bytes | None:
    """Return the stored record for ``session_id``, or None if there is none.

    Required.  Return it as stored: expired and hibernated records included (the
    manager decides what they mean).  Must not change anything.
    """


@hookspec(firstresult=True)
def torpor_store(record: Record) -> None:
    """Store ``record`` under ``record.id``, replacing any previous one.

    Required.  Unconditional: the manager has already decided that this write is
    right (under ``torpor_transact``, or under its own lock when the backend has no
    such hook).  Keep either ``record.blob`` (bytes) or the record itself.  A write
    is acknowledged when this returns: it must then survive whatever the backend's
    durability promises.
    """


@hookspec(firstresult=True)
def torpor_delete(session_id: str) -> bool:  # type: ignore[empty-body]
    """Delete the record; True if one existed.  Required."""


@hookspec(firstresult=True)
def torpor_ids() -> Iterable[str | bytes]:  # type: ignore[empty-body]
    """Every stored key, as stored.

    Required.  May be a snapshot list or a lazy iterable; it may include keys that are
    not valid session ids (foreign keys in a shared namespace): return them as
    ``bytes`` if they are not valid UTF-8.  The manager filters them.
    """


# ---------------------------------------------------------------------------------
# Optional data hooks (each one is a capability)
# ---------------------------------------------------------------------------------
@hookspec(firstresult=True)
def torpor_transact(session_id: str, fn: TransactFn) -> None:
    """Atomic read-modify-write of one session.  Capability ``ATOMIC_UPDATE``.

    Read the current record (``None`` if missing), call ``fn`` with it, and apply what
    ``fn`` returns, all atomically with respect to every other writer of the storage
    (threads, and processes for a multi-process backend):

    * a ``Record``: store it (as ``torpor_store`` would);
    * ``torpor.DELETE``: delete the session;
    * ``None``: change nothing.

    If ``fn`` raises, store nothing and let the exception propagate.  ``fn`` may be
    called more than once if the backend retries an optimistic transaction, so it must
    have no effect besides its return value.  Without this hook the manager serialises
    writers with an in-process lock per id, which is atomic only within one process.
    """


@hookspec(firstresult=True)
def torpor_transact_batch(session_ids: Sequence[str], fn: BatchFn) -> None:
    """``torpor_transact`` for several sessions in one transaction.  Optional, and only
    with ``torpor_transact`` (it is part of ``ATOMIC_UPDATE``).

    Call ``fn(session_id, current)`` for each id in order, applying each result as
    ``torpor_transact`` would, all in one atomic transaction.  Sweeps use it to
    hibernate or expire a batch with one commit instead of one per session.  If ``fn``
    raises, abort the whole transaction and let the exception propagate (an urgent
    close stops a sweep this way).  Without this hook the manager calls
    ``torpor_transact`` once per id.
    """


@hookspec(firstresult=True)
def torpor_iterate(cursor: Any, batch_size: int) -> tuple[Sequence[Record | bytes], Any]:  # type: ignore[empty-body]
    """One batch of a native walk over all records.  Capability ``NATIVE_ITERATION``.

    ``cursor`` is None for the first batch, then whatever the previous call returned.
    Return ``(records, next_cursor)``; ``next_cursor`` None means the walk is over.
    Every record that exists during the whole walk must be returned exactly once;
    records written during the walk may or may not be.  Each call should open and close
    its own read transaction (a slow consumer must not pin a snapshot) and hold memory
    in proportion to ``batch_size``, not to the store.
    """


@hookspec(firstresult=True)
def torpor_idle_ids(cutoff_ms: int, limit: int) -> Sequence[str]:  # type: ignore[empty-body]
    """Ids of active sessions with ``last_accessed < cutoff_ms``, oldest first, at most
    ``limit``.  Capability ``NATIVE_HIBERNATION``.

    Answered from an index ordered by last access, so the cost follows the number of
    idle sessions, not the size of the store.  The manager re-checks each candidate
    under ``torpor_transact`` before hibernating it, so a stale answer is harmless.
    """


@hookspec(firstresult=True)
def torpor_expired_ids(now_ms: int, limit: int) -> Sequence[str]:  # type: ignore[empty-body]
    """Ids of sessions with ``last_accessed + timeout_ms < now_ms``, at most ``limit``.
    Capability ``NATIVE_EXPIRY``.  Re-checked by the manager like ``torpor_idle_ids``.
    """


@hookspec(firstresult=True)
def torpor_count() -> int:  # type: ignore[empty-body]
    """How many records are stored (expired ones included).  Optional; without it the
    manager counts ``torpor_ids``."""


@hookspec(firstresult=True)
def torpor_find(criteria: Mapping[str, Any]) -> Sequence[Record | bytes]:  # type: ignore[empty-body]
    """Records whose ``data[field] == value`` for every item of ``criteria``.
    Capability ``SECONDARY_INDEX``.  May include expired records (the manager filters).
    """


@hookspec(firstresult=True)
def torpor_create_index(field: str) -> None:
    """Index ``data[field]`` so that ``torpor_find`` answers through it.  Capability
    ``SECONDARY_INDEX`` (implemented together with ``torpor_find``).  Idempotent."""


@hookspec(firstresult=True)
def torpor_stats() -> BackendStats:  # type: ignore[empty-body]
    """Counts and memory the backend knows cheaply.  Optional; fields may be None."""


@hookspec(firstresult=True)
def torpor_mailbox() -> Mailbox:  # type: ignore[empty-body]
    """The backend's mailbox (see ``torpor.Mailbox``).  Capability ``SHARED_MAILBOX``
    when it is shared by every process that opens the storage.  Optional; without it
    the manager keeps an in-process mailbox.  Called once, at open.
    """


# ---------------------------------------------------------------------------------
# Observers
# ---------------------------------------------------------------------------------
@hookspec
def torpor_event(event: LifecycleEvent) -> None:
    """A lifecycle event (created, hibernated, woken, expired, deleted, cancelled).

    For observer plugins (metrics, audit logs).  Called synchronously in the thread
    that caused the event, after the change is stored: keep it quick, and do not call
    back into the manager.  Exceptions are logged and swallowed.
    """
