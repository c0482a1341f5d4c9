"""The backend contract: every hook a torpor plugin can implement.

This module is the plugin author's reference; ``docs/contract.md`` is what the
manager promises users (and so what a backend must help keep), and
``docs/plugin-authors.md`` is the tutorial.  A *backend* is a plain object whose
methods are named after these hooks (decorating them with ``torpor.hookimpl`` is
optional).  It is built by a factory registered under the entry-point group
``torpor.backends``.  The factory may declare, as static metadata read without
calling it, the capabilities its backends claim and which of its options name
storage (``torpor.backend_factory``, ``torpor.describe_factory``): ``torpor
backends`` lists them without opening anything, and the conformance kit gives each
test its own storage from them.

How the manager uses a backend
==============================

The manager owns every rule of the contract: id validation, expiry, versions, the
hibernation criteria, size limits, encoding.  A backend only keeps
:class:`torpor.Record` values and, optionally, indexes over them.  That split keeps
the semantics identical on every engine, and makes a backend small:

* **Required**: ``torpor_fetch``, ``torpor_store``, ``torpor_delete``, ``torpor_ids``.
  With only these four, every manager call works through the core's fallbacks.
* **Optional, each a capability**: ``torpor_transact`` (``ATOMIC_UPDATE``),
  ``torpor_iterate`` (``NATIVE_ITERATION``), ``torpor_idle_ids``
  (``NATIVE_HIBERNATION``), ``torpor_expired_ids`` (``NATIVE_EXPIRY``),
  ``torpor_find`` with ``torpor_create_index`` (``SECONDARY_INDEX``) and
  ``torpor_mailbox`` (``SHARED_MAILBOX``, only with ``ATOMIC_UPDATE``) and
  ``torpor_transaction`` (``TRANSACTIONS``, only with ``ATOMIC_UPDATE``).  A backend
  that implements one must claim the capability in ``torpor_capabilities``, and the
  conformance kit then tests it natively.  Claiming a capability without the hook
  (or the reverse) is refused when the manager opens.
* **Optional, no capability of their own**: ``torpor_capabilities``,
  ``torpor_open``, ``torpor_close``, ``torpor_touch_resolution_ms``,
  ``torpor_transact_batch`` (only with ``torpor_transact``), ``torpor_iterate_ids``
  (only with ``torpor_iterate``), ``torpor_expire`` (only with
  ``torpor_expired_ids`` and ``torpor_transact``), ``torpor_count``, ``torpor_stats``,
  ``torpor_shared_dictionary``; and ``torpor_event`` for observers.

Writing the methods
===================

* Every *callable* attribute whose name starts with ``torpor_`` is taken for a hook
  implementation, decorated or not.  A name that is not one of the hooks below is
  refused when the manager opens (``ConfigError``: "unknown hook"), because it is
  almost always a typo; name your own helpers otherwise.
* Parameters are matched by name (pluggy passes arguments as keywords, and the
  manager's direct path passes them in the hookspec's order): use exactly the
  hookspec's parameter names, in its order.  A parameter you do not need may be left
  out (``def torpor_close(self)``); a name the hookspec does not have is refused at
  open.
* ``torpor.hookimpl`` is needed only for options: ``wrapper=True`` (extension
  plugins), ``tryfirst``/``trylast``.

Reading records
===============

A backend that indexes what it stores reads records through the public helpers,
never by decoding bytes itself: ``Record.of(value, key)`` turns what it keeps (a
``Record`` or the stored bytes) into a ``Record``, raising ``SerializationError`` for
a value that is not an intact record of ``key``; the metadata fields
(``last_accessed``, ``hibernated``, ``timeout_ms``, ``version``, ``incarnation``,
:meth:`Record.expires_at`) are then plain attributes, and
:meth:`Record.session_data` gives the data dict of a live or hibernated record
(bounded by ``max_session_bytes``, from ``torpor_open``'s options).

Values a backend gives back
===========================

Wherever a hook returns a stored session it may return either the ``bytes`` of
:attr:`Record.blob` exactly as stored, or a :class:`Record`.  The manager never hands a
backend's objects to users (``Record.to_session`` copies), so an in-process backend can
return its records without copying.  Walks (``torpor_iterate``) and ``torpor_find``
return ``(key, value)`` pairs, so that the manager can tell a record stored under
another key than the id it names (damaged or foreign data) from a real session.

Damaged and foreign data
========================

A backend stores what it is given and gives back what it has, bytes for bytes; it
never decides whether a value is a valid record.  The manager does: a value that is
not an intact torpor record (or names another id than its key) raises
``SerializationError`` on ``get``/``peek``/``update``, is removed by ``delete``, and is
skipped, logged once and counted in ``stats().damaged`` by walks, ``len``, ``find`` and
sweeps.  So a backend's walks and indexes must keep going past such values, and its
``torpor_delete`` must work without decoding the value.

Incarnations, removals and the mailbox
======================================

``Record.incarnation`` tells two lives of one id apart.  A transaction function
removes a session by returning a :class:`Removal`: ``DELETE``, ``CANCEL`` or
``EXPIRE``; its ``reason`` matters only to a backend with its own mailbox
(``SHARED_MAILBOX``), which must, *in the same transaction as the record change*:

* on a removal, discard every message of the session and leave the reason where
  receivers blocked on that incarnation (in any process) will find it: they raise
  ``SessionCancelled`` for ``CANCEL``, ``SessionNotFound`` otherwise;
* on a store whose ``incarnation`` differs from the stored record's (``create`` over
  an expired session), do the same as for ``EXPIRE``.

``Mailbox.send`` checks, in one atomic step with the enqueue, that the stored record
still has the given incarnation.  Together these make sure that no message outlives
its session, none reaches a later session with the same id, and none is dropped from
a live one.  Cleaning up must cost what the removed session's own messages cost,
never a scan of other sessions' data.  Without ``SHARED_MAILBOX`` the core does all
of this itself with an in-process mailbox.  ``torpor.Mailbox`` says what each of a
mailbox's methods returns, raises and waits for.

Errors
======

A backend translates its engine's exceptions into ``torpor.errors.BackendUnavailable``
(keeping the original as ``__cause__``); nothing raw may reach a user.

Thread safety
=============

Hooks are called from any thread, concurrently.  Backends must be thread-safe.
The manager never calls a hook from inside a transaction function of the same thread
(a user's ``update`` function that calls back into torpor gets ``ReentrantCall``), so
a backend may hold its write lock or transaction while ``fn`` runs.  One read is the
exception: ``torpor_shared_dictionary(None)`` (see there).

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from torpor._capabilities import BackendStats, Capability
    from torpor._clock import Clock
    from torpor._events import LifecycleEvent
    from torpor._mailbox import Mailbox
    from torpor._record import Record
    from torpor._transaction import BackendTransaction

__all__ = [
    "CANCEL",
    "DELETE",
    "EXPIRE",
    "PROJECT",
    "BatchFn",
    "Expired",
    "Removal",
    "TransactFn",
    "hookimpl",
    "hookspec",
]

PROJECT = "torpor"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Removal:
    """What a transaction function returns to remove the session.

    Three instances exist: ``DELETE``, ``CANCEL`` and ``EXPIRE``.  A backend removes
    the record for each alike; ``reason`` (``"deleted"``, ``"cancelled"``,
    ``"expired"``) is for a backend's own mailbox, which tells blocked receivers why
    their session went (see "Incarnations, removals and the mailbox" above).
    """

    __slots__ = ("_name", "reason")

    def __init__(self, name: str, reason: str) -> None:
        self._name = name
        self.reason = reason

    def __repr__(self) -> str:
        return f"torpor.{self._name}"


DELETE = Removal("DELETE", "deleted")
CANCEL = Removal("CANCEL", "cancelled")
EXPIRE = Removal("EXPIRE", "expired")


@dataclass(frozen=True, slots=True)
class Expired:
    """What one atomic step of a native expiry sweep (``torpor_expire``) did."""

    count: int
    """How many sessions the step removed."""
    removed: Sequence[tuple[str, int]] = ()
    """``(session id, incarnation)`` of each of them: needed only without
    ``SHARED_MAILBOX`` (the manager then ends each incarnation's in-process mail); a
    backend with its own mailbox ended it in the step and may leave this out."""
    damaged: Sequence[str | bytes] = ()
    """Keys the step met in its expiry index whose values it would not remove (not an
    intact record it wrote); the manager logs each once."""


TransactFn = Callable[["Record | bytes | None"], "Record | Removal | None"]
BatchFn = Callable[[str, "Record | bytes | None"], "Record | Removal | None"]


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
    resolved manager options (read-only; ``max_session_bytes`` is the ``limit`` to
    pass to :meth:`Record.session_data`).  Raise ``BackendUnavailable`` if the engine
    cannot be reached: the open fails, and the manager calls ``torpor_close``.
    """


@hookspec
def torpor_close(urgent: bool) -> None:
    """Release every resource.  Called once, after the calls in flight and the sweeper
    have finished (or, for an urgent close, been interrupted: a transaction still
    running then fails instead of committing).

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
    durability promises.  A backend with indexes updates them here, with the record
    (a store is also how a session is touched, hibernated, woken, rewritten and
    replaced by a new incarnation).
    """


@hookspec(firstresult=True)
def torpor_delete(session_id: str) -> bool:  # type: ignore[empty-body]
    """Delete the record; True if one existed.  Required.  Must not need to decode the
    stored value: it is how a damaged record is removed."""


@hookspec(firstresult=True)
def torpor_ids() -> Iterable[str | bytes]:  # type: ignore[empty-body]
    """Every stored key, as stored.

    Required.  May be a snapshot list or a lazy iterable; it may include keys that are
    not valid session ids (foreign keys in a shared namespace): return them as
    ``bytes`` if they are not valid UTF-8.  The manager filters them, and skips them
    in walks and counts.
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
    * a :class:`Removal` (``torpor.DELETE``, ``CANCEL`` or ``EXPIRE``): delete the
      session (and, with ``SHARED_MAILBOX``, its mail, in the same transaction);
    * ``None``: change nothing.

    If ``fn`` raises, store nothing and let the exception propagate.  ``fn`` may be
    called more than once if the backend retries an optimistic transaction (the
    manager keeps only the last call's decision), so it must have no effect besides
    its return value.  Without this hook the manager serialises writers with an
    in-process lock per id, which is atomic only within one process.
    """


@hookspec(firstresult=True)
def torpor_transact_batch(session_ids: Sequence[str], fn: BatchFn) -> None:
    """``torpor_transact`` for several sessions in one transaction.  Optional, and only
    with ``torpor_transact`` (it is part of ``ATOMIC_UPDATE``).

    Call ``fn(session_id, current)`` for each id in order, applying each result as
    ``torpor_transact`` would, all in one atomic transaction (one commit).  Sweeps use
    it to hibernate or expire a batch with one commit instead of one per session.  If
    ``fn`` raises, abort the whole transaction (nothing of the batch is applied) and
    let the exception propagate: an urgent close stops a sweep this way.  Without this
    hook the manager calls ``torpor_transact`` once per id.
    """


@hookspec(firstresult=True)
def torpor_iterate(  # type: ignore[empty-body]
    cursor: Any, batch_size: int
) -> tuple[Sequence[tuple[str | bytes, Record | bytes]], Any]:
    """One batch of a native walk over all records.  Capability ``NATIVE_ITERATION``.

    ``cursor`` is None for the first batch, then whatever the previous call returned.
    Return ``(items, next_cursor)``: ``items`` are ``(key, value)`` pairs (the key as
    ``torpor_ids`` gives it, the value as ``torpor_fetch`` would); ``next_cursor`` None
    means the walk is over.  Every record that exists during the whole walk must be
    returned exactly once, and no key may come twice in one walk, even if it is deleted
    and created again meanwhile; records written during the walk may or may not be
    returned.  Values that are not valid records are returned like any other (the
    manager skips them).  Each call should open and close its own read transaction (a
    slow consumer must not pin a snapshot), return at most ``batch_size`` items, and
    hold memory in proportion to ``batch_size``, not to the store.
    """


@hookspec(firstresult=True)
def torpor_iterate_ids(  # type: ignore[empty-body]
    cursor: Any, batch_size: int, now_ms: int
) -> tuple[Sequence[str | bytes], Any]:
    """One batch of a walk over the ids of live sessions, for ``Manager.ids()``.
    Optional, and only with ``torpor_iterate`` (it is part of ``NATIVE_ITERATION``).

    The same walk as ``torpor_iterate`` (same ``cursor`` protocol, same order, the same
    exactly-once guarantee, one short read transaction per call, at most
    ``batch_size`` records looked at per call, memory in proportion to the batch), but
    it returns only the keys of the records the manager would keep: values that are
    *intact* and *not expired* at ``now_ms``.  Intact means what the manager checks
    in a walk: ``Record.of(value, key)`` succeeds (a torpor record naming its own
    key) and its data decodes (``Record.session_data(max_session_bytes)``).  Expired
    means ``now_ms - last_accessed > timeout_ms``.  Every other value (damaged,
    foreign, an imposter, an expired record) is skipped, never returned and never
    raised; the manager still counts and logs damage in ``stats()``, which walks
    whole records with ``torpor_iterate``.  Keys that are not valid session ids may
    be returned or skipped: the manager drops them.

    Write it when a walk of whole records costs much more than its ids (large
    records in a persistent store): a backend may prove a value intact without
    decoding it, e.g. with a checksum stored beside the record when the record was
    written from data the manager encoded, but must never return a value it has not
    proved; when in doubt, decode as the manager would.  A batch may hold fewer ids
    than ``batch_size`` (even none, with a cursor to go on).  Without this hook,
    ``ids()`` walks ``torpor_iterate`` and decodes every record; so does it when an
    extension plugin wraps ``torpor_iterate`` but not this hook.
    """


@hookspec(firstresult=True)
def torpor_idle_ids(cutoff_ms: int, limit: int) -> Sequence[str]:  # type: ignore[empty-body]
    """Ids of active (not hibernated) sessions with ``last_accessed < cutoff_ms``,
    oldest first, at most ``limit``.  Capability ``NATIVE_HIBERNATION``.  (The order
    is a courtesy, not a rule the manager needs: an index keyed by a time that may lag
    ``last_accessed`` a little, as mnesia_like's, orders to within that lag.)

    Answered from an index ordered by last access, so the cost follows the number of
    idle sessions, not the size of the store.  The manager re-checks each candidate
    under ``torpor_transact`` before hibernating it, so a stale answer is harmless,
    but a missing one is not: ``limit`` counts the ids returned, after any filtering
    (an index that cuts at ``limit`` first and then drops hibernated or stale entries
    returns too few, and sweeps stop early).  The manager asks for several batches'
    worth at a time, plus the candidates it has passed over (which no longer
    qualified), and calls again until an answer is shorter than its ``limit``.  A
    session woken (stored active again) must be back in the index.
    """


@hookspec(firstresult=True)
def torpor_expired_ids(now_ms: int, limit: int) -> Sequence[str]:  # type: ignore[empty-body]
    """Ids of sessions with ``last_accessed + timeout_ms < now_ms`` (that is
    ``Record.expires_at() < now_ms``), at most ``limit`` counted after filtering.
    Capability ``NATIVE_EXPIRY``.  Re-checked and paged by the manager like
    ``torpor_idle_ids``; hibernated sessions expire too.
    """


@hookspec(firstresult=True)
def torpor_expire(now_ms: int, batch_size: int) -> Iterable[Expired]:  # type: ignore[empty-body]
    """Remove every session expired at ``now_ms``, natively: one atomic step per
    batch, each yielding an :class:`Expired`.  Optional, and only with
    ``torpor_expired_ids`` (it is part of ``NATIVE_EXPIRY``) and ``torpor_transact``:
    each step must be atomic with the backend's transactions, so that a removal
    never interleaves with an update of the same session (without
    ``torpor_transact`` the core serialises writes with locks of its own, which a
    backend's sweep would bypass).

    Without it, ``cleanup_expired()`` and the sweeper page ``torpor_expired_ids``,
    read each candidate under ``torpor_transact_batch``, re-check it in Python and
    write the removals back: two round trips and every record's bytes per batch.
    Write this hook when the engine can do the check where the data lives (a Redis
    function, a SQL ``DELETE ... RETURNING``).  Each step must:

    * remove exactly the sessions with ``Record.expires_at() < now_ms`` (strict: a
      session whose deadline is ``now_ms`` is still alive), hibernated or not, at
      most ``batch_size`` of them, each with its index entries and, with
      ``SHARED_MAILBOX``, its mail, ended with the reason of ``EXPIRE`` exactly as a
      removal returned by a transaction function would be;
    * never remove a value it cannot prove is an intact record it wrote itself from
      what the manager gave it (a header or checksum it stores with the record, say):
      a damaged or foreign value stays, and its key goes in ``Expired.damaged``;
    * commit before it is yielded; the manager may stop iterating after any batch (an
      urgent close) and close the generator, which must leave nothing half done.

    The iteration ends when every session that was expired at ``now_ms`` throughout
    it has been removed: damaged values and index entries of records that no longer
    exist never stop it early.  The manager calls this only while it holds no buffered touch (see
    ``torpor_touch_resolution_ms``): otherwise it runs its own pass, which lays those
    touches over what it decides on.  Without ``SHARED_MAILBOX`` the manager ends the
    in-process mail of each ``(id, incarnation)`` in ``Expired.removed``.
    """


@hookspec(firstresult=True)
def torpor_count(now_ms: int) -> int | None:
    """How many sessions ``ids()`` would yield at ``now_ms`` on a quiet store: intact
    records that are not expired (``now_ms - last_accessed > timeout_ms``), without
    damaged or foreign values.  Optional; return None (or leave the hook out) unless
    you know the exact figure cheaply, and the manager counts by walking.
    """


@hookspec(firstresult=True)
def torpor_find(
    criteria: Mapping[str, Any],
) -> Sequence[tuple[str | bytes, Record | bytes]] | None:
    """``(key, value)`` pairs of the records whose ``data[field] == value`` for every
    item of ``criteria``.  Capability ``SECONDARY_INDEX``.  May include expired records
    and false positives (the manager re-checks every candidate), but must not miss a
    match.  Return None when no criterion is indexed: the manager then scans in
    batches, which a backend must not do in one transaction.

    The index follows the records in the transaction that changes them: entries for
    the new data on every store that changes ``version`` or ``incarnation`` (create,
    update, save, and a create over an expired session), none left behind by a
    removal.  Equal values in Python's sense (``1 == 1.0 == True``) must find each
    other: key the index with ``torpor.indexing.canonical_key``.
    """


@hookspec(firstresult=True)
def torpor_create_index(field: str) -> None:
    """Index ``data[field]`` so that ``torpor_find`` answers through it, sessions
    already stored included.  Capability ``SECONDARY_INDEX`` (implemented together
    with ``torpor_find``).  Idempotent."""


@hookspec(firstresult=True)
def torpor_stats() -> BackendStats:  # type: ignore[empty-body]
    """What the backend knows about its memory or storage footprint, and how it was
    measured.  Optional.  (Session counts come from the manager's own walk.)"""


@hookspec(firstresult=True)
def torpor_mailbox() -> Mailbox:  # type: ignore[empty-body]
    """The backend's mailbox (see ``torpor.Mailbox``).  Capability ``SHARED_MAILBOX``:
    shared by every process that opens the storage, and changed in the same
    transaction as the records (see "Incarnations, removals and the mailbox" above),
    which is why it goes with ``ATOMIC_UPDATE``.  Optional; without it the manager
    keeps an in-process mailbox.  Called once, at open.
    """


@hookspec(firstresult=True)
def torpor_transaction() -> BackendTransaction:  # type: ignore[empty-body]
    """Begin a multi-session transaction for ``Manager.transaction()``.  Capability
    ``TRANSACTIONS``, only with ``ATOMIC_UPDATE``.

    Return a :class:`torpor.BackendTransaction` that has begun and already holds what
    it needs to be isolated from every other writer, in this process and others
    (SQLite: ``BEGIN IMMEDIATE`` on this thread's connection).  The manager uses it from
    this thread only: it reads through ``fetch``, writes every change through
    ``store`` and ``remove`` exactly as ``torpor_transact`` would apply a function's
    ``Record`` or ``Removal`` (indexes, and with ``SHARED_MAILBOX`` the mail, in the
    same transaction), nests with ``savepoint``/``release``/``rollback_to``, and ends
    with ``commit`` or ``rollback``.  Until it commits nothing of it may be visible to
    any other reader, and nothing another writer does may change what it read.

    Waiting for the write lock is bounded: raise ``TransactionConflict`` when the lock
    cannot be had in time (the manager's function form runs the body again), or
    ``BackendUnavailable`` when the engine fails.  A backend whose transactions are
    optimistic may raise ``TransactionConflict`` from any method, ``commit`` included:
    the manager rolls back.  The kit's ``transactions`` area tests all of this
    (bank transfers from threads and processes, aborts, re-runs, nested rollbacks).
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


# ---------------------------------------------------------------------------------
# Compression
# ---------------------------------------------------------------------------------
@hookspec(firstresult=True)
def torpor_shared_dictionary(proposal: bytes | None) -> bytes | None:
    """The store's zstd dictionary, kept in the store so that every process that reads
    its hibernated sessions has it.  Optional; without it a store whose blobs other
    processes (or a restart) read is compressed without a dictionary, and one whose
    blobs stay in the process trains one of its own in memory.

    * ``proposal`` None: return the dictionary's bytes as stored, or None if none is
      stored yet; change nothing.  Called when a manager opens on the backend object,
      and again whenever a hibernated session names a dictionary this process does
      not have yet (another process stored it since): that call may come from inside
      a transaction function of the same thread (a hibernated record read while it is
      updated or swept), so it must not wait for the backend's own write lock.
    * ``proposal`` bytes (a dictionary the manager trained on its first hibernated
      sessions, never from inside a transaction function): store it unless a
      dictionary is stored already, in one atomic step across every process sharing
      the storage (``SET NX``, an insert that does not overwrite), then return
      whichever is stored: another process may have won the race, and every process
      uses what the store returns.

    The manager calls the backend's own method (extension plugins cannot supply or
    wrap it).  The bytes are opaque (a zstd dictionary, which names its own id): store
    them exactly.  Once stored, a dictionary is part of the data: never replace or expire
    it while the store holds sessions, since hibernated sessions compressed with it
    cannot be read without it.  Raise ``BackendUnavailable`` if the engine cannot be
    reached.
    """
