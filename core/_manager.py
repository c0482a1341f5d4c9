"""The manager: every public call of docs/contract.md §3.

The rules live in ``torpor._decisions`` (pure functions), the choice between a
backend's native hooks and the core's fallbacks in ``torpor._binding``, walks and
damaged-data handling in ``torpor._iteration``, the passes in ``torpor._sweeps`` and
the background thread in ``torpor._sweeper``.  What is left here is the public API:
argument checks, running decisions in transactions, and what follows a commit
(events, the in-process mailbox).
"""

from __future__ import annotations

import functools
import logging
import math
import secrets
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any, Final, TypeVar, cast, overload

from torpor import codec
from torpor._binding import Binding, make_plugin_manager
from torpor._capabilities import BackendStats, Capability, Stats
from torpor._clock import Clock, system_clock
from torpor._compaction import compactor_for
from torpor._decisions import (
    MISSING,
    Change,
    Outcome,
    decide_create,
    decide_read,
    decide_remove,
    decide_rewrite,
    decide_save,
    needs_write,
)
from torpor._default import DEFAULT, Default
from torpor._events import EventKind, LifecycleEvent
from torpor._fallbacks import LocalMailbox
from torpor._ids import generate_id, key_to_id, validate_id
from torpor._iteration import DamageLog, as_record, intact, walk, walk_ids
from torpor._lifecycle import CallGate, user_code
from torpor._mailbox import Mailbox
from torpor._record import Record
from torpor._session import Session
from torpor._sweeper import Job, Sweeper
from torpor._sweeps import StopFlag, Sweeps
from torpor._touches import TouchBuffer
from torpor._transaction import (
    BackendTransaction,
    Transaction,
    run_transaction,
    transaction_scope,
)
from torpor.errors import (
    ConfigError,
    InvalidArgument,
    InvalidSessionId,
    ManagerClosed,
    SerializationError,
    SessionNotFound,
    SessionTooLarge,
    TorporError,
    UnsupportedOperation,
)
from torpor.hookspecs import CANCEL, DELETE, EXPIRE, Removal

__all__ = ["Manager", "SessionId"]

SessionId = str | bytes
"""A session id: a str, or its UTF-8 bytes (docs/contract.md §2)."""

log = logging.getLogger("torpor")

F = TypeVar("F", bound=Callable[..., Any])
Change_ = Callable[[Record], "Record | None"]
"""A change to a live record (``_rewrite``)."""
T = TypeVar("T")

_REMOVAL_EVENTS: Final = {
    DELETE: EventKind.DELETED,
    CANCEL: EventKind.CANCELLED,
    EXPIRE: EventKind.EXPIRED,
}
# The envelope adds at most this much to the payload (id of 255 bytes, eight
# metadata fields): below it, a payload cannot make the record too large.
_ENVELOPE_MAX: Final = 512
_URGENT_DRAIN_S: Final = 0.05
_ORDERLY_DRAIN_S: Final = 30.0


def _gated(method: F) -> F:
    """A public call: refused once closed or from inside an update function, and
    counted while it runs so that ``close()`` waits for it."""

    @functools.wraps(method)
    def call(self: Manager, *args: Any, **kwargs: Any) -> Any:
        gate = self._gate
        gate.enter()
        try:
            touches = self._touches
            if touches is not None and touches.overdue():
                self._flush_quietly()  # the flusher is held up: this call writes them
            return method(self, *args, **kwargs)
        finally:
            gate.exit()

    return cast(F, call)


class _Last:
    """The outcome of a transaction function's last call (a backend may retry)."""

    __slots__ = ("outcome",)

    def __init__(self) -> None:
        self.outcome: Outcome = MISSING


class Manager:
    """A session store over one backend.  Thread-safe.  Build it with ``torpor.open``.

    Every method validates its input before the backend is touched and raises only
    errors from ``torpor.errors`` (besides exceptions raised by your own ``update``
    function, which propagate unchanged).
    """

    def __init__(
        self,
        backend: object,
        *,
        name: str,
        options: Mapping[str, Any],
        clock: Clock | None = None,
        plugins: tuple[object, ...] = (),
    ) -> None:
        self._gate = CallGate()
        self._gate.closed = True  # until fully open: a failed open is not "unclosed"
        self.backend_name = name
        self._options = dict(options)
        self._clock: Clock = clock or system_clock
        self._default_timeout: int | None = options["default_timeout_ms"]
        self._hibernate_after: int | None = options["hibernate_after_ms"]
        self._max_bytes: int = options["max_session_bytes"]
        self._batch: int = options["sweep_batch_size"]
        # Set by close(urgent=True): passes stop at the next session, and transactions
        # still in flight abort instead of committing into a backend being closed.
        self._abort = False
        self._close_done = threading.Event()
        self._damage = DamageLog()
        self._touches: TouchBuffer | None = None
        self._sweeper: Sweeper | None = None
        self._flusher: Sweeper | None = None
        try:
            self._pm = make_plugin_manager(backend, plugins)
            self._b = Binding(self._pm, backend, fast_path=options["fast_path"])
            self._b.call_all("torpor_open", clock=self._clock, options=dict(self._options))
            self._touch_resolution = self._resolution(options["touch_resolution_ms"])
            # Only where a touch would be its own write (a resolution > 0), and where a
            # thread writes them while the manager is quiet: see _touches.
            if self._touch_resolution and options["sweeper"]:
                self._touches = TouchBuffer(
                    self._b,
                    self._touch_resolution,
                    self._batch,
                    self._clock,
                    self._hibernate_after,
                    self._max_bytes,
                )
            # What this manager read counts: each decision lays its buffered touches
            # over the stored record (see _touches).
            self._overlay = _no_touches if self._touches is None else self._touches.seen
            native_mailbox = self._b.mailbox() if self._b.mailbox is not None else None
            # Callbacks hold the manager weakly: no reference cycle, so a manager dropped
            # without close() is collected (and warns) at once, not at the next GC.
            self._local: LocalMailbox | None = (
                LocalMailbox(_weakly(self._incarnation_of)) if native_mailbox is None else None
            )
            self._mailbox: Mailbox = native_mailbox or self._local  # type: ignore[assignment]
            self._compactor = compactor_for(backend, self._b.capabilities)
            self._sweeps = Sweeps(
                self._b,
                self._batch,
                _weakly(self._emit),
                self._damage,
                _weakly(self._end_expired_mail),
                self._max_bytes,
                self._compactor,
                self._overlay,
                (lambda: 0) if self._touches is None else self._touches.__len__,
            )
            self._sweeper = self._start_sweeper(options)
            self._flusher = (
                None
                if self._touches is None
                else Sweeper(
                    [
                        (
                            "touches",
                            max(0.05, self._touches.interval_ms / 1000),
                            weakref.WeakMethod(self._flush_due),
                        )
                    ]
                )
            )
        except BaseException:
            self._release_after_failed_open(backend)
            raise
        self._gate.closed = False

    def _release_after_failed_open(self, backend: object) -> None:
        """A failed open closes what it built: every plugin's ``torpor_close`` once the
        hooks were registered, else the backend's own."""
        pm = getattr(self, "_pm", None)
        try:
            if pm is not None:
                pm.hook.torpor_close(urgent=True)
            elif callable(close := getattr(backend, "torpor_close", None)):
                close(urgent=True)
        except Exception:
            log.warning("closing %r after a failed open failed", backend, exc_info=True)

    def _resolution(self, configured: int | None) -> int:
        """The touch resolution: the backend's (or the configured) one, but never more
        than half of ``hibernate_after_ms`` (per session, never more than half of its
        timeout either: see ``needs_write``), so regular reads keep a session alive."""
        if configured is None:
            configured = self._pm.hook.torpor_touch_resolution_ms() or 0
        if self._hibernate_after is not None:
            configured = min(configured, self._hibernate_after // 2)
        return int(configured)

    def _start_sweeper(self, options: Mapping[str, Any]) -> Sweeper | None:
        jobs: list[Job] = []
        if self._hibernate_after is not None:
            every = max(0.05, self._hibernate_after / 2000)
            jobs.append(("hibernation", every, weakref.WeakMethod(self._sweep_hibernation)))
        if options["cleanup_interval_ms"] is not None:
            every = max(0.05, options["cleanup_interval_ms"] / 1000)
            jobs.append(("expiry", every, weakref.WeakMethod(self._sweep_expiry)))
        return Sweeper(jobs) if options["sweeper"] and jobs else None

    # -- properties --------------------------------------------------------------
    @property
    def capabilities(self) -> frozenset[Capability]:
        return self._b.capabilities

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def touch_resolution_ms(self) -> int:
        """Reads refresh ``last_accessed`` only when it is at least this old (0: always),
        and never less often than half of a session's timeout."""
        return self._touch_resolution

    @property
    def sweeper(self) -> Sweeper | None:
        """The background sweeper, or None when automatic maintenance is off."""
        return self._sweeper

    @property
    def closed(self) -> bool:
        return self._gate.closed

    def __repr__(self) -> str:
        state = "closed" if self._gate.closed else "open"
        return f"<torpor.Manager backend={self.backend_name!r} {state}>"

    # -- helpers -----------------------------------------------------------------
    def _encode(self, data: object) -> bytes:
        payload = codec.encode_data(data)
        if len(payload) > self._max_bytes - _ENVELOPE_MAX:
            self._check_size(len(payload))  # a first, cheap refusal of the hopeless
        return payload

    def _check_size(self, size: int) -> None:
        if size > self._max_bytes:
            raise SessionTooLarge(
                f"session encodes to {size} bytes, over max_session_bytes="
                f"{self._max_bytes}; store less, or raise max_session_bytes"
            )

    def _sized(self, record: Record) -> Record:
        """``record`` if its stored form fits ``max_session_bytes`` (measured on the
        real envelope whenever the payload comes near the limit)."""
        payload = record.payload
        if payload is not None and len(payload) > self._max_bytes - _ENVELOPE_MAX:
            self._check_size(len(record.blob))
        return record

    def _emit(
        self, kind: EventKind, sid: str | None, count: int = 1, saved: int | None = None
    ) -> None:
        if not self._b.observed:
            return
        try:
            self._b.call_all("torpor_event", event=LifecycleEvent(kind, sid, count, saved))
        except Exception:
            log.exception("a torpor_event observer failed; event %s dropped", kind.value)

    def _transact(
        self, sid: str, decide: Callable[[Record | None], tuple[Change, Outcome]]
    ) -> Outcome:
        """Run a decision in the backend's transaction; the last call's outcome."""
        last = _Last()
        overlay = self._overlay

        def fn(current: object) -> Change:
            change, last.outcome = decide(overlay(as_record(current, sid)))
            self._refuse_if_aborted()
            return change

        self._b.transact(sid, fn)
        return last.outcome

    def _refuse_if_aborted(self) -> None:
        """Inside a transaction function: an urgent close has given up waiting for this
        call, so it must not commit (it is not acknowledged: the caller gets an error)."""
        if self._abort:
            raise ManagerClosed("the manager was closed urgently; this write was not applied")

    def _settle(self, sid: str, outcome: Outcome) -> None:
        """What follows a committed change: the in-process mailbox, events."""
        if outcome.gone is not None and outcome.removal is not None:
            self._ended(sid, outcome.gone, outcome.removal)
        if outcome.woke:
            self._emit(EventKind.WOKEN, sid)

    def _ended(self, sid: str, gone: Record | None, removal: Removal) -> None:
        """An incarnation was removed (or replaced): its mail goes, observers hear."""
        self._end_mail(sid, gone, removal)
        if gone is not None:
            self._emit(_REMOVAL_EVENTS[removal], sid)

    def _end_mail(self, sid: str, gone: Record | None, removal: Removal = EXPIRE) -> None:
        """The in-process mailbox drops the incarnation's mail and wakes its waiters.
        (A backend's own mailbox did this in the removing transaction.)"""
        if self._local is not None:
            self._local.end(sid, None if gone is None else gone.incarnation, removal)

    def _end_expired_mail(self, sid: str, incarnation: int) -> None:
        if self._local is not None:
            self._local.end(sid, incarnation, EXPIRE)

    def _fetched(
        self, sid: str, read: Callable[[object, str], Record | None] = as_record
    ) -> tuple[Record | None, Record | None]:
        """(the record as stored, as this manager sees it).  Fetched again if a flush
        committed meanwhile: its touch may have left the buffer before the fetch saw
        it stored."""
        touches = self._touches
        if touches is None:
            record = read(self._b.fetch(sid), sid)
            return record, record
        while True:
            generation = touches.generation
            stored = read(self._b.fetch(sid), sid)
            seen = touches.seen(stored)
            if touches.generation == generation:
                return stored, seen

    def _live(self, sid: str) -> Record | None:
        record = self._fetched(sid)[1]
        return None if record is None or record.is_expired(self._clock()) else record

    def _incarnation_of(self, sid: str) -> int | None:
        record = self._live(sid)
        return None if record is None else record.incarnation

    # -- create and read -----------------------------------------------------------
    @_gated
    def create(
        self,
        data: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        session_id: SessionId | None = None,
        timeout_ms: int | Default | None = DEFAULT,
    ) -> Session:
        """Create a session atomically.  ``session_id`` given and in use: ``SessionExists``.

        Without ``session_id`` a fresh id with 128 random bits is generated
        (``session_<name>_<token>`` when ``name`` is given).  An id in use by an expired
        session is taken over: that session ends (as expired) and this is a new one.
        """
        record = self._new_record(data, name, session_id, timeout_ms)
        sid, now = record.id, record.created_at
        outcome = self._transact(sid, lambda current: decide_create(current, record, now))
        self._settle(sid, outcome)
        self._emit(EventKind.CREATED, sid)
        return record.written_session(self._max_bytes)

    def _new_record(
        self,
        data: dict[str, Any] | None,
        name: str | None,
        session_id: SessionId | None,
        timeout_ms: int | Default | None,
    ) -> Record:
        """The first record of a new session (``create``'s arguments checked)."""
        if session_id is not None and name is not None:
            raise InvalidSessionId("pass name= or session_id=, not both", rule="name_and_id")
        sid = validate_id(session_id) if session_id is not None else generate_id(name)
        timeout = self._default_timeout if isinstance(timeout_ms, Default) else _timeout(timeout_ms)
        payload = self._encode({} if data is None else data)
        now = self._clock()
        return self._sized(Record(sid, now, now, timeout, 1, False, secrets.randbits(63), payload))

    @_gated
    def get(self, session_id: SessionId) -> Session | None:
        """The session, touched (and woken if hibernated); None if missing or expired
        (an expired one is removed)."""
        sid = validate_id(session_id)
        now = self._clock()
        limit = self._max_bytes
        touches = self._touches
        if self._touch_resolution:
            # Coalesced touch: a read that would only move last_accessed by less than
            # the resolution does not write (see torpor_touch_resolution_ms), and one
            # that would is buffered when it safely can be (see _touches).
            stored, record = self._fetched(sid)
            if record is None or stored is None:
                return None
            if not needs_write(record, now, self._touch_resolution):
                return record.to_session(limit)
            if (
                touches is not None
                and not record.is_expired(now)
                and touches.may_defer(stored, now)
            ):
                # Decoded first: a damaged record raises and nothing is buffered.
                session = record.touched(max(now, record.last_accessed)).to_session(limit)
                if touches.note(record, now):  # too many
                    self._flush_quietly()
                return session
        read: list[Session | None] = [None]

        def decide(current: Record | None) -> tuple[Change, Outcome]:
            change, outcome = decide_read(current, now, limit)
            # Decoded before the write commits: a damaged payload is never written back.
            read[0] = None if outcome.record is None else outcome.record.to_session(limit)
            return change, outcome

        self._settle(sid, self._transact(sid, decide))
        return read[0]

    @_gated
    def peek(self, session_id: SessionId) -> Session | None:
        """The session without touching or waking it; None if missing or expired."""
        record = self._live(validate_id(session_id))
        return None if record is None else record.to_session(self._max_bytes)

    @_gated
    def __contains__(self, session_id: object) -> bool:
        try:
            sid = validate_id(session_id)
        except InvalidSessionId:
            return False
        try:
            # Decodes the payload of a stored blob too, as len() and ids() do: a record
            # whose data is damaged is not a session for any of them.
            record = self._fetched(sid, lambda value, key: intact(value, key, self._max_bytes))[1]
        except SerializationError:
            return False
        return record is not None and not record.is_expired(self._clock())

    @_gated
    def __len__(self) -> int:
        """Live sessions: what ``ids()`` would yield on a quiet store (expired ones
        awaiting cleanup and damaged records are not counted)."""
        if self._b.count is not None:
            counted = self._b.count(self._clock())
            if counted is not None:
                return int(counted)
        return sum(1 for _ in self._live_records(self._batch))

    # -- writes ------------------------------------------------------------------
    def _rewrite(
        self, sid: str, change: Callable[[Record], Record | None], *, verify: bool = True
    ) -> Record | None:
        """Apply ``change`` to the live session.  ``verify``: first check that its data
        decodes, so a damaged record is never rewritten (``update`` decodes anyway)."""
        now = self._clock()
        limit = self._max_bytes

        def decide(current: Record | None) -> tuple[Change, Outcome]:
            if verify and current is not None:
                current.check(limit)
            return decide_rewrite(current, now, change)

        outcome = self._transact(sid, decide)
        self._settle(sid, outcome)
        return outcome.record

    @_gated
    def update(
        self, session_id: SessionId, fn: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> Session:
        """Atomic read-modify-write: ``fn`` gets a private copy of the data and returns
        the new data (a dict: anything else, ``None`` included, is a
        ``SerializationError`` and nothing is stored).  If ``fn`` raises, nothing
        changes and the exception propagates.  ``fn`` may run more than once on
        backends that retry optimistic transactions, and must not call torpor
        (``ReentrantCall``).  Missing or expired: ``SessionNotFound``."""
        sid = validate_id(session_id)
        result = self._rewrite(sid, self._modifier(fn), verify=False)
        if result is None:
            raise SessionNotFound(f"session {sid!r} does not exist (or has expired)")
        return result.written_session(self._max_bytes)

    def _modifier(self, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Change_:
        """``update``'s change: ``fn`` over a private copy of the data."""
        if not callable(fn):
            raise InvalidArgument(
                f"update() needs a function data -> data, not {type(fn).__name__}", argument="fn"
            )
        now = self._clock()

        def modify(record: Record) -> Record:
            with user_code():
                new_data = fn(record.to_session(self._max_bytes).data)
            if type(new_data) is not dict:
                hint = " (dict.update() returns None: return the dict)" if new_data is None else ""
                raise SerializationError(
                    f"update() function must return the new data as a dict, not "
                    f"{type(new_data).__name__}{hint}; nothing was stored"
                )
            return self._sized(record.rewritten(self._encode(new_data), now))

        return modify

    @_gated
    def save(self, session: Session) -> Session:
        """Write back a session read earlier, if nobody wrote it since.

        Stale version: ``Conflict``.  Deleted or expired meanwhile, or deleted and
        created again (another incarnation): ``SessionNotFound`` (a deleted session is
        never resurrected).  Only ``data`` is written; the stored timeout is kept.
        """
        sid, saver = self._saver(session)
        result = self._rewrite(sid, saver)
        if result is None:
            raise SessionNotFound(f"session {sid!r} was deleted or has expired; not saved")
        return result.written_session(self._max_bytes)

    def _saver(self, session: Session) -> tuple[str, Change_]:
        """``save``'s id and change: the copy's data, if its version is the stored one."""
        if not isinstance(session, Session):
            raise SerializationError(f"save() takes a torpor.Session, not {type(session).__name__}")
        sid = validate_id(session.id)
        payload = self._encode(session.data)
        now = self._clock()
        check = decide_save(session.incarnation, session.version)
        return sid, lambda r: self._sized(check(r).rewritten(payload, now))

    @overload
    def transaction(self) -> AbstractContextManager[Transaction]: ...
    @overload
    def transaction(self, fn: Callable[[Transaction], T]) -> T: ...

    def transaction(
        self, fn: Callable[[Transaction], T] | None = None
    ) -> AbstractContextManager[Transaction] | T:
        """A multi-session transaction (capability ``TRANSACTIONS``): see
        ``torpor.Transaction`` and docs/guide.md.

        ``with mgr.transaction() as tx:`` runs its body once; ``mgr.transaction(fn)``
        runs ``fn(tx)`` and returns its result, running it again when the backend
        meets contention (so ``fn`` must have no other side effects).  Everything
        done through ``tx`` commits together or not at all; an exception rolls it
        back and propagates.  Without the capability: ``UnsupportedOperation``."""
        begin = self._b.transaction
        if begin is None:
            raise UnsupportedOperation(
                f"backend {self.backend_name!r} has no multi-session transactions "
                "(capability TRANSACTIONS; mnesia_like has them); update sessions one at "
                "a time, or use a backend that claims it"
            )
        if fn is None:
            return self._transaction_scope(begin)
        if not callable(fn):
            raise InvalidArgument(
                f"transaction() takes a function tx -> result, not {type(fn).__name__}",
                argument="fn",
            )
        self._gate.enter()
        try:
            return run_transaction(self, begin, fn)
        finally:
            self._gate.exit()

    @contextmanager
    def _transaction_scope(self, begin: Callable[[], BackendTransaction]) -> Iterator[Transaction]:
        self._gate.enter()  # a call in flight until it ends: close() waits for it
        try:
            with transaction_scope(self, begin) as tx:
                yield tx
        finally:
            self._gate.exit()

    @_gated
    def touch(self, session_id: SessionId) -> bool:
        """Refresh ``last_accessed`` (a hibernated session stays hibernated)."""
        sid = validate_id(session_id)
        now = self._clock()
        return self._rewrite(sid, lambda r: r.touched(max(now, r.last_accessed))) is not None

    @_gated
    def set_timeout(self, session_id: SessionId, timeout_ms: int | None) -> bool:
        """Change the timeout (None: never expires) without touching the session."""
        sid = validate_id(session_id)
        timeout = _timeout(timeout_ms)
        return self._rewrite(sid, lambda r: r.with_timeout(timeout)) is not None

    @_gated
    def delete(self, session_id: SessionId) -> bool:
        """Delete; True if a session (or a damaged record) was there.  Idempotent.
        Pending messages go too, and consumers waiting on the session get
        ``SessionNotFound``."""
        return self._remove(validate_id(session_id), DELETE)

    @_gated
    def cancel(self, session_id: SessionId) -> bool:
        """Delete the session, drop its messages, and wake blocked consumers with
        ``SessionCancelled``.  True if the session existed."""
        return self._remove(validate_id(session_id), CANCEL)

    def _remove(self, sid: str, removal: Removal) -> bool:
        now = self._clock()
        last = _Last()
        damaged = [False]

        def fn(current: object) -> Change:
            damaged[0] = False
            try:
                record = as_record(current, sid)
            except SerializationError:
                damaged[0] = True  # removable all the same, without decoding
                last.outcome = MISSING
                return removal
            change, last.outcome = decide_remove(self._overlay(record), now, removal)
            self._refuse_if_aborted()
            return change

        self._b.transact(sid, fn)
        outcome = last.outcome
        if damaged[0]:
            self._ended(sid, None, removal)
            return True
        self._settle(sid, outcome)
        return outcome.removal is removal

    # -- iteration and queries -----------------------------------------------------
    def _batch_size(self, batch_size: object) -> int:
        if batch_size is None:
            return self._batch
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgument(
                f"batch_size must be a whole number >= 1, not {batch_size!r}",
                argument="batch_size",
            )
        return batch_size

    def _live_records(self, size: int) -> Iterator[Record]:
        """Intact, unexpired records, a batch per backend call; each batch is fetched
        as a call of its own (refused once the manager is closed)."""
        batches = walk(self._b, size, self._damage, self._max_bytes)
        while True:
            batch = self._gate.run(lambda: next(batches, None))
            if batch is None:
                return
            now = self._clock()
            for record in batch[0]:
                if not record.is_expired(now):
                    yield record

    def _live_sessions(self, size: int) -> Iterator[Session]:
        for record in self._live_records(size):
            try:
                yield record.to_session(self._max_bytes)
            except SerializationError as exc:
                self._damage.note(record.id, str(exc))

    def ids(self, batch_size: int | None = None) -> Iterator[str]:
        """Lazily yield the id of every live session; no touch, no wake."""
        size = self._gate.run(lambda: self._batch_size(batch_size))
        if self._b.iterate_ids is None:
            return (record.id for record in self._live_records(size))
        return self._live_ids(size)

    def _live_ids(self, size: int) -> Iterator[str]:
        """``ids()`` through ``torpor_iterate_ids``: the backend skips damaged and
        expired records without handing them over, so memory follows the ids of a
        batch, not its records; each batch is fetched as a call of its own."""
        batches = walk_ids(self._b, size, self._clock, self._damage)
        while True:
            batch = self._gate.run(lambda: next(batches, None))
            if batch is None:
                return
            yield from batch

    def sessions(self, batch_size: int | None = None) -> Iterator[Session]:
        """Lazily yield every live session; no touch, no wake.  A record whose data
        cannot be decoded is skipped (and logged), never raised mid-walk."""
        size = self._gate.run(lambda: self._batch_size(batch_size))
        return self._live_sessions(size)

    @_gated
    def find(self, **criteria: Any) -> list[Session]:
        """Sessions whose ``data[field] == value`` for every criterion.  Native on
        backends with secondary indexes, a batched scan elsewhere."""
        if not criteria:
            raise InvalidArgument(
                "find() needs at least one field=value criterion", argument="criteria"
            )
        candidates: Iterator[Session] | None = None
        if self._b.find is not None:
            pairs = self._b.find(dict(criteria))
            if pairs is not None:
                candidates = self._decoded(pairs)
        if candidates is None:
            candidates = self._live_sessions(self._batch)
        return [
            s
            for s in candidates
            if all(k in s.data and s.data[k] == v for k, v in criteria.items())
        ]

    def _decoded(self, pairs: Any) -> Iterator[Session]:
        now = self._clock()
        for key, value in pairs:
            try:
                sid = key_to_id(key)
                record = None if sid is None else intact(value, sid, self._max_bytes)
                if record is not None and not record.is_expired(now):
                    yield record.to_session(self._max_bytes)
            except SerializationError as exc:
                self._damage.note(key, str(exc))

    @_gated
    def create_index(self, field: str) -> None:
        """Ask the backend to index ``data[field]`` for ``find``.  Backends without
        secondary indexes raise ``UnsupportedOperation`` (``find`` still works there,
        by scanning)."""
        if not isinstance(field, str) or not field:
            raise InvalidArgument("an index field must be a non-empty str", argument="field")
        if self._b.create_index is None:
            raise UnsupportedOperation(
                f"backend {self.backend_name!r} has no secondary indexes; find() works "
                "without them by scanning, or use a backend with SECONDARY_INDEX"
            )
        self._b.create_index(field)

    @_gated
    def list_utf8_ids(self) -> list[str]:
        """Stored keys that are valid ids; foreign keys are skipped and logged."""
        valid: list[str] = []
        skipped: list[str | bytes] = []
        for key in self._b.ids():
            sid = key_to_id(key)
            if sid is None:
                skipped.append(key)
            else:
                valid.append(sid)
        if skipped:
            log.warning(
                "list_utf8_ids skipped %d key(s) that are not valid session ids, e.g. %r",
                len(skipped),
                skipped[:3],
            )
        return valid

    # -- hibernation and expiry ----------------------------------------------------
    def _stopped(self) -> bool:
        return self._abort

    @_gated
    def hibernate_idle(self, threshold_ms: int | None = None) -> int:
        """Hibernate every active session idle for more than ``threshold_ms`` (default:
        ``hibernate_after_ms``); return how many.  ``last_accessed`` is not changed."""
        threshold = threshold_ms if threshold_ms is not None else self._hibernate_after
        if threshold is None:
            raise ConfigError("no threshold: pass threshold_ms or set hibernate_after_ms")
        threshold = _timeout(threshold, "threshold_ms") or 0
        self._flush_quietly()
        return self._sweeps.hibernate(self._clock() - threshold, self._stopped).count

    @_gated
    def cleanup_expired(self) -> int:
        """Remove every expired session; return how many."""
        self._flush_quietly()
        return self._sweeps.expire(self._clock(), self._stopped).count

    @_gated
    def flush(self) -> int:
        """Write the touches this manager buffered (see ``touch_resolution_ms``) now;
        return how many sessions it refreshed.  The sweeper, the maintenance calls and
        an orderly ``close()`` do this on their own."""
        return self._flush_touches()

    def _flush_touches(self) -> int:
        return 0 if self._touches is None else self._touches.flush()

    def _flush_due(self, stop: StopFlag) -> None:
        """The flusher's job (see _touches)."""
        touches = self._touches
        if touches is not None and not stop() and touches.due():
            touches.flush()

    def _flush_quietly(self) -> None:
        """A flush on another call's path: that call goes on whatever it meets (a
        failed flush keeps its touches for the next one)."""
        try:
            self._flush_touches()
        except TorporError:
            log.warning("torpor: writing buffered touches failed; will retry", exc_info=True)

    @_gated
    def run_maintenance(self, stop: StopFlag | None = None) -> None:
        """One pass of everything the sweeper does: hibernation (if
        ``hibernate_after_ms``) then expiry.  ``stop()`` returning True interrupts it,
        and so does an urgent close."""
        flag = self._stopped if stop is None else (lambda: self._abort or stop())
        self._sweep_hibernation(flag)
        self._sweep_expiry(flag)

    def _sweep_hibernation(self, stop: StopFlag) -> None:
        if self._hibernate_after is not None and not stop():
            self._flush_quietly()
            self._sweeps.hibernate(self._clock() - self._hibernate_after, stop)

    def _sweep_expiry(self, stop: StopFlag) -> None:
        if not stop():
            self._flush_quietly()
            self._sweeps.expire(self._clock(), stop)

    # -- mailbox -------------------------------------------------------------------
    def _require_live(self, sid: str) -> Record:
        record = self._live(sid)
        if record is None:
            raise SessionNotFound(f"session {sid!r} does not exist (or has expired)")
        return record

    @_gated
    def send(self, session_id: SessionId, message: Any, *, priority: bool = False) -> None:
        """Queue ``message`` (any msgpack-able value) for the session.  Priority
        messages overtake every normal one.  Missing session: ``SessionNotFound``."""
        sid = validate_id(session_id)
        encoded = codec.encode_value(message)
        record = self._require_live(sid)
        if not self._mailbox.send(sid, record.incarnation, encoded, bool(priority)):
            raise SessionNotFound(f"session {sid!r} was deleted while sending; not queued")

    @_gated
    def receive(
        self, session_id: SessionId, *, max_messages: int = 1, timeout: float | None = None
    ) -> list[Any]:
        """Up to ``max_messages`` messages, priority ones first, each delivered once.

        With none queued, wait up to ``timeout`` seconds (None: do not wait).  Raises
        ``SessionCancelled`` if the session is cancelled while waiting,
        ``SessionNotFound`` if it is deleted, ``ManagerClosed`` if the manager closes.
        """
        sid = validate_id(session_id)
        if isinstance(max_messages, bool) or not isinstance(max_messages, int) or max_messages < 1:
            raise InvalidArgument(
                f"max_messages must be a whole number >= 1, not {max_messages!r}",
                argument="max_messages",
            )
        wait = _seconds(timeout)
        record = self._require_live(sid)
        raw = self._mailbox.receive(sid, record.incarnation, max_messages, wait)
        return list(self._decoded_messages(sid, raw))

    def _decoded_messages(self, sid: str, raw: list[bytes]) -> Iterator[Any]:
        """Taken messages are gone from the mailbox: one that does not decode (damaged
        storage) is logged and skipped, never allowed to lose the others with it."""
        for message in raw:
            try:
                yield codec.decode_value(message, f"a message for session {sid!r}")
            except SerializationError as exc:
                log.error("dropping a damaged message: %s", exc)

    @_gated
    def pending(self, session_id: SessionId) -> int:
        """How many messages wait for the session (0 if it does not exist)."""
        record = self._live(validate_id(session_id))
        return 0 if record is None else self._mailbox.pending(record.id, record.incarnation)

    @_gated
    def waiters(self, session_id: SessionId) -> int:
        """How many consumers in this process are blocked in ``receive`` for the
        session (for monitoring, and for tests that must not sleep)."""
        return self._mailbox.waiters(validate_id(session_id))

    # -- stats and lifecycle ---------------------------------------------------------
    @_gated
    def stats(self) -> Stats:
        """Counts from one batched walk of the store, plus the backend's memory figure."""
        reported = self._b.stats() if self._b.stats is not None else BackendStats()
        live = hibernated = expired = damaged = 0
        now = self._clock()
        for records, skipped in walk(self._b, self._batch, self._damage, self._max_bytes):
            damaged += skipped
            for record in records:
                if record.is_expired(now):
                    expired += 1
                else:
                    live += 1
                    hibernated += record.hibernated
        return Stats(
            backend=self.backend_name,
            sessions=live,
            active=live - hibernated,
            hibernated=hibernated,
            memory_bytes=reported.memory_bytes,
            capabilities=self._b.capabilities,
            iteration="native" if self._b.iterate is not None else "fallback",
            stored=live + expired + damaged,
            expired_pending=expired,
            damaged=damaged,
            memory_method=reported.memory_method,
        )

    def native(self, area: str) -> bool:
        """Whether an area ("iteration", "hibernation", "expiry", "mailbox", "find",
        "transact") is served by the backend (True) or the core's fallback (False)."""
        areas = self._b.native()
        if area not in areas:
            raise UnsupportedOperation(f"unknown area {area!r}; known: {', '.join(areas)}")
        return areas[area]

    def close(self, *, urgent: bool = False) -> None:
        """Refuse new calls, wait for the calls in flight, stop the sweeper, release
        the backend.  Idempotent and thread-safe.

        ``urgent=False`` lets calls in flight and a running sweep pass finish.
        ``urgent=True`` interrupts sweeps at the next session and returns within
        100 ms; acknowledged writes are kept.  Consumers blocked in ``receive`` raise
        ``ManagerClosed`` either way.
        """
        self._gate.refuse_reentry()  # from an update function it would wait for itself
        if urgent:
            self._abort = True  # also hurries an orderly close already under way
            for thread in (self._sweeper, self._flusher):
                if thread is not None:
                    thread.hurry()
        if not self._gate.begin_close():
            self._close_done.wait()  # another thread is closing: return once it is done
            return
        try:
            self._mailbox.close()
            for thread in (self._sweeper, self._flusher):
                if thread is not None:
                    thread.stop(urgent=urgent)
            if not self._gate.drain(_ORDERLY_DRAIN_S, _URGENT_DRAIN_S, self._stopped):
                # Whatever is still in flight now aborts before it commits.
                self._abort = True
                log.warning("torpor: closing with calls still in flight; they will fail")
            if not self._abort and self._touches is not None:
                try:  # a touch is not data: an urgent close drops them
                    self._touches.flush()
                except TorporError:
                    log.warning("torpor: buffered touches lost at close", exc_info=True)
        finally:
            self._b.call_all("torpor_close", urgent=self._abort)
            self._close_done.set()

    def __enter__(self) -> Manager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        gate = getattr(self, "_gate", None)
        if gate is None or gate.closed:
            return
        warnings.warn(
            f"{self!r} was not closed; closing it now (use `with torpor.open(...)` or "
            "call close())",
            ResourceWarning,
            source=self,
            stacklevel=1,
        )
        try:
            self.close(urgent=True)
        except Exception:  # pragma: no cover - nothing to report to at this point
            log.debug("closing a dropped manager failed", exc_info=True)


def _no_touches(record: Record | None) -> Record | None:
    return record


def _weakly(method: Callable[..., T]) -> Callable[..., T]:
    """A bound method that does not keep its object alive."""
    ref = weakref.WeakMethod(method)

    def call(*args: Any) -> T:
        bound = ref()
        if bound is None:
            raise ManagerClosed("the manager was garbage-collected")
        return bound(*args)

    return call


_MAX_MS: Final = 2**62  # stored as a 64-bit integer; ~146 million years


def _timeout(value: object, argument: str = "timeout_ms") -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_MS:
        raise InvalidArgument(
            f"{argument} must be None or a whole number of ms below 2**62, not {value!r}",
            argument=argument,
        )
    return value


def _seconds(value: object) -> float:
    """``receive``'s timeout: None (do not wait) or a finite number of seconds >= 0."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(
            f"timeout must be None or a number of seconds, not {type(value).__name__}",
            argument="timeout",
        )
    if not math.isfinite(value) or value < 0:
        raise InvalidArgument(
            f"timeout must be a finite number of seconds >= 0, not {value!r}",
            argument="timeout",
        )
    return float(value)
