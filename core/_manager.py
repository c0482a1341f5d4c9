"""The manager: every public call of DESIGN §4, its rules, and its fallbacks."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Final

from torpor import codec
from torpor._binding import Binding, make_plugin_manager
from torpor._capabilities import BackendStats, Capability, Stats
from torpor._clock import Clock, system_clock
from torpor._events import EventKind, LifecycleEvent
from torpor._ids import generate_id, is_valid_id, validate_id
from torpor._mailbox import LocalMailbox, Mailbox
from torpor._maintenance import Maintenance, Sweeper, as_record, walk_records
from torpor._record import Record
from torpor._session import Session
from torpor.errors import (
    ConfigError,
    Conflict,
    InvalidSessionId,
    ManagerClosed,
    SerializationError,
    SessionExists,
    SessionNotFound,
    SessionTooLarge,
    UnsupportedOperation,
)
from torpor.hookspecs import DELETE

__all__ = ["Manager", "SessionId"]

SessionId = str | bytes
"""A session id: a str, or its UTF-8 bytes (DESIGN §3)."""

log = logging.getLogger("torpor")


class _Default:
    def __repr__(self) -> str:
        return "<default>"


DEFAULT: Final = _Default()
_NEVER_STOP: Final = lambda: False  # noqa: E731


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
        self._closed = True  # until fully open, so close() in a failed open is harmless
        self.backend_name = name
        self._options = dict(options)
        self._clock: Clock = clock or system_clock
        self._default_timeout: int | None = options["default_timeout_ms"]
        self._hibernate_after: int | None = options["hibernate_after_ms"]
        self._max_bytes: int = options["max_session_bytes"]
        self._batch: int = options["sweep_batch_size"]
        self._pm = make_plugin_manager(backend, plugins)
        self._b = Binding(self._pm, backend, fast_path=options["fast_path"])
        self._b.call_all("torpor_open", clock=self._clock, options=dict(self._options))
        self._closed = False
        resolution = options["touch_resolution_ms"]
        if resolution is None:
            resolution = self._pm.hook.torpor_touch_resolution_ms() or 0
        self._touch_resolution: int = resolution
        self._mailbox: Mailbox = (
            self._b.mailbox() if self._b.mailbox is not None else LocalMailbox()
        )
        self._maintenance = Maintenance(self._b, self._batch, self._emit, self._mailbox.discard)
        self._sweeper: Sweeper | None = None
        cleanup = options["cleanup_interval_ms"]
        periods = [p for p in (self._hibernate_after, cleanup) if p]
        if options["sweeper"] and periods:
            self._sweeper = Sweeper(
                weakref.WeakMethod(self.run_maintenance), max(0.05, min(periods) / 2000)
            )

    # -- properties --------------------------------------------------------------
    @property
    def capabilities(self) -> frozenset[Capability]:
        return self._b.capabilities

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def touch_resolution_ms(self) -> int:
        """Reads refresh ``last_accessed`` only when it is at least this old (0: always)."""
        return self._touch_resolution

    @property
    def sweeper(self) -> Sweeper | None:
        """The background sweeper, or None when automatic maintenance is off."""
        return self._sweeper

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<torpor.Manager backend={self.backend_name!r} {state}>"

    # -- helpers -----------------------------------------------------------------
    def _ensure_open(self) -> None:
        if self._closed:
            raise ManagerClosed("this manager is closed; open a new one with torpor.open()")

    def _check(self, session_id: object) -> str:
        self._ensure_open()
        return validate_id(session_id)

    def _encode(self, data: object) -> bytes:
        payload = codec.encode_data({} if data is None else data)
        # The limit applies to the whole stored record; the envelope adds its metadata.
        if len(payload) > self._max_bytes - 64:
            size = len(codec.encode_envelope(("", 0, 0, None, 0, False), payload, compressed=False))
            if size > self._max_bytes:
                raise SessionTooLarge(
                    f"session encodes to {size} bytes, over max_session_bytes="
                    f"{self._max_bytes}; store less, or raise max_session_bytes"
                )
        return payload

    def _emit(
        self, kind: EventKind, sid: str | None, count: int = 1, saved: int | None = None
    ) -> None:
        if not self._b.observed:
            return
        try:
            self._b.call_all("torpor_event", event=LifecycleEvent(kind, sid, count, saved))
        except Exception:
            log.exception("a torpor_event observer failed; event %s dropped", kind.value)

    def _expired(self, sid: str) -> None:
        self._mailbox.discard(sid)
        self._emit(EventKind.EXPIRED, sid)

    def _live(self, sid: str, now: int) -> Record | None:
        record = as_record(self._b.fetch(sid))
        return None if record is None or record.is_expired(now) else record

    # -- create and read -----------------------------------------------------------
    def create(
        self,
        data: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        session_id: str | None = None,
        timeout_ms: int | _Default | None = DEFAULT,
    ) -> Session:
        """Create a session atomically.  ``session_id`` given and in use: ``SessionExists``.

        Without ``session_id`` a fresh id with 128 random bits is generated
        (``session_<name>_<token>`` when ``name`` is given).
        """
        self._ensure_open()
        if session_id is not None and name is not None:
            raise InvalidSessionId("pass name= or session_id=, not both", rule="name_and_id")
        sid = validate_id(session_id) if session_id is not None else generate_id(name)
        timeout = (
            self._default_timeout if isinstance(timeout_ms, _Default) else _timeout(timeout_ms)
        )
        payload = self._encode(data)
        now = self._clock()
        record = Record(sid, now, now, timeout, 1, False, payload)
        replaced_expired: list[bool] = []

        def insert(current: object) -> Record:
            existing = as_record(current)
            if existing is not None:
                if not existing.is_expired(now):
                    raise SessionExists(f"session {sid!r} already exists")
                replaced_expired.append(True)
            return record

        self._b.transact(sid, insert)
        if replaced_expired:
            self._expired(sid)
        self._emit(EventKind.CREATED, sid)
        return record.to_session()

    def get(self, session_id: SessionId) -> Session | None:
        """The session, touched (and woken if hibernated); None if missing or expired
        (an expired one is removed)."""
        sid = self._check(session_id)
        now = self._clock()
        if self._touch_resolution:
            # Coalesced touch: a read that would only move last_accessed by less than
            # the resolution does not write (see torpor_touch_resolution_ms).
            record = as_record(self._b.fetch(sid))
            if record is None:
                return None
            idle = now - record.last_accessed
            if (
                idle < self._touch_resolution
                and not record.hibernated
                and (record.timeout_ms is None or idle <= record.timeout_ms)
            ):
                return record.to_session()
        outcome: list[tuple[Record | None, bool]] = []

        def wake_and_touch(current: object) -> object:
            record = as_record(current)
            if record is None:
                return None
            if record.is_expired(now):
                outcome.append((None, False))
                return DELETE
            new = record.woken() if record.hibernated else record
            new = new.touched(max(now, record.last_accessed))
            outcome.append((new, record.hibernated))
            return new

        self._b.transact(sid, wake_and_touch)  # type: ignore[arg-type]
        if not outcome:
            return None
        result, woke = outcome[-1]
        if result is None:
            self._expired(sid)
            return None
        if woke:
            self._emit(EventKind.WOKEN, sid)
        return result.to_session()

    def peek(self, session_id: SessionId) -> Session | None:
        """The session without touching or waking it; None if missing or expired."""
        sid = self._check(session_id)
        record = self._live(sid, self._clock())
        return None if record is None else record.to_session()

    def __contains__(self, session_id: object) -> bool:
        try:
            sid = self._check(session_id)
        except InvalidSessionId:
            return False
        return self._live(sid, self._clock()) is not None

    def __len__(self) -> int:
        """Stored sessions, counting expired ones until cleanup removes them."""
        self._ensure_open()
        if self._b.count is not None:
            return int(self._b.count())
        return sum(1 for k in self._b.ids() if isinstance(k, str) and is_valid_id(k))

    # -- writes ------------------------------------------------------------------
    def _rewrite(
        self, sid: str, now: int, change: Callable[[Record], Record | None]
    ) -> Record | None:
        """Apply ``change`` to the live record atomically.  Missing: None.  Expired:
        removed, None.  ``change`` returning None leaves the record as it is."""
        outcome: list[Record | None] = []

        def apply(current: object) -> object:
            record = as_record(current)
            if record is None:
                return None
            if record.is_expired(now):
                outcome.append(None)
                return DELETE
            new = change(record)
            outcome.append(new if new is not None else record)
            return new

        self._b.transact(sid, apply)  # type: ignore[arg-type]
        if outcome and outcome[-1] is None:
            self._expired(sid)
            return None
        return outcome[-1] if outcome else None

    def update(
        self, session_id: SessionId, fn: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> Session:
        """Atomic read-modify-write: ``fn`` gets a private copy of the data and returns
        the new data.  If ``fn`` raises, nothing changes and the exception propagates.
        ``fn`` may run more than once on backends that retry optimistic transactions.
        Missing or expired: ``SessionNotFound``."""
        sid = self._check(session_id)
        now = self._clock()

        def modify(record: Record) -> Record:
            new_data = fn(record.to_session().data)
            return record.rewritten(self._encode(new_data), now)

        result = self._rewrite(sid, now, modify)
        if result is None:
            raise SessionNotFound(f"session {sid!r} does not exist (or has expired)")
        return result.to_session()

    def save(self, session: Session) -> Session:
        """Write back a session read earlier, if nobody wrote it since.

        Stale version: ``Conflict``.  Deleted or expired meanwhile: ``SessionNotFound``
        (a deleted session is never resurrected).  Only ``data`` is written; the
        stored timeout is kept.
        """
        if not isinstance(session, Session):
            raise SerializationError(f"save() takes a torpor.Session, not {type(session).__name__}")
        sid = self._check(session.id)
        payload = self._encode(session.data)
        now = self._clock()

        def replace(record: Record) -> Record:
            if record.version != session.version:
                raise Conflict(
                    f"session {sid!r} is at version {record.version}, your copy is at "
                    f"{session.version}; get() it again and reapply your change"
                )
            return record.rewritten(payload, now)

        result = self._rewrite(sid, now, replace)
        if result is None:
            raise SessionNotFound(f"session {sid!r} was deleted or has expired; not saved")
        return result.to_session()

    def touch(self, session_id: SessionId) -> bool:
        """Refresh ``last_accessed`` (a hibernated session stays hibernated)."""
        sid = self._check(session_id)
        now = self._clock()
        return self._rewrite(sid, now, lambda r: r.touched(max(now, r.last_accessed))) is not None

    def set_timeout(self, session_id: SessionId, timeout_ms: int | None) -> bool:
        """Change the timeout (None: never expires) without touching the session."""
        sid = self._check(session_id)
        timeout = _timeout(timeout_ms)
        return self._rewrite(sid, self._clock(), lambda r: r.with_timeout(timeout)) is not None

    def delete(self, session_id: SessionId) -> bool:
        """Delete; True if a live session existed.  Idempotent.  Pending messages go
        too, and consumers waiting on the session get ``SessionNotFound``."""
        return self._remove(session_id, EventKind.DELETED)

    def _remove(self, session_id: SessionId, kind: EventKind) -> bool:
        sid = self._check(session_id)
        now = self._clock()
        found: list[bool] = []

        def drop(current: object) -> object:
            record = as_record(current)
            if record is None:
                return None
            found.append(not record.is_expired(now))
            return DELETE

        self._b.transact(sid, drop)  # type: ignore[arg-type]
        if kind is EventKind.CANCELLED:
            self._mailbox.cancel(sid)
        else:
            self._mailbox.discard(sid)
        existed = bool(found and found[0])
        if existed:
            self._emit(kind, sid)
        elif found:
            self._emit(EventKind.EXPIRED, sid)
        return existed

    # -- iteration and queries -----------------------------------------------------
    def _records(self, batch_size: int | None) -> Iterator[Record]:
        self._ensure_open()
        size = batch_size or self._batch
        if size <= 0:
            raise ConfigError("batch_size must be > 0")
        for batch in walk_records(self._b, size):
            now = self._clock()
            for record in batch:
                if not record.is_expired(now):
                    yield record

    def ids(self, batch_size: int | None = None) -> Iterator[str]:
        """Lazily yield the id of every live session; no touch, no wake."""
        for record in self._records(batch_size):
            yield record.id

    def sessions(self, batch_size: int | None = None) -> Iterator[Session]:
        """Lazily yield every live session; no touch, no wake."""
        for record in self._records(batch_size):
            yield record.to_session()

    def find(self, **criteria: Any) -> list[Session]:
        """Sessions whose ``data[field] == value`` for every criterion.  Native on
        backends with secondary indexes, a scan elsewhere."""
        if not criteria:
            raise ConfigError("find() needs at least one field=value criterion")
        self._ensure_open()
        if self._b.find is not None:
            now = self._clock()
            candidates = (as_record(v) for v in self._b.find(dict(criteria)))
            sessions: Iterator[Session] = (
                r.to_session() for r in candidates if r is not None and not r.is_expired(now)
            )
        else:
            sessions = self.sessions()
        return [
            s for s in sessions if all(k in s.data and s.data[k] == v for k, v in criteria.items())
        ]

    def create_index(self, field: str) -> None:
        """Ask the backend to index ``data[field]`` for ``find``.  Backends without
        secondary indexes raise ``UnsupportedOperation`` (``find`` still works there,
        by scanning)."""
        self._ensure_open()
        if not isinstance(field, str) or not field:
            raise ConfigError("an index field must be a non-empty str")
        if self._b.create_index is None:
            raise UnsupportedOperation(
                f"backend {self.backend_name!r} has no secondary indexes; find() works "
                "without them by scanning, or use a backend with SECONDARY_INDEX"
            )
        self._b.create_index(field)

    def list_utf8_ids(self) -> list[str]:
        """Stored keys that are valid ids; foreign keys are skipped and logged."""
        self._ensure_open()
        valid: list[str] = []
        skipped: list[str | bytes] = []
        for key in self._b.ids():
            if isinstance(key, str) and is_valid_id(key):
                valid.append(key)
            else:
                skipped.append(key)
        if skipped:
            log.warning(
                "list_utf8_ids skipped %d key(s) that are not valid session ids, e.g. %r",
                len(skipped),
                skipped[:3],
            )
        return valid

    # -- hibernation and expiry ----------------------------------------------------
    def hibernate_idle(self, threshold_ms: int | None = None) -> int:
        """Hibernate every active session idle for more than ``threshold_ms`` (default:
        ``hibernate_after_ms``); return how many.  ``last_accessed`` is not changed."""
        self._ensure_open()
        threshold = threshold_ms if threshold_ms is not None else self._hibernate_after
        if threshold is None:
            raise ConfigError("no threshold: pass threshold_ms or set hibernate_after_ms")
        threshold = _timeout(threshold)
        assert threshold is not None
        return self._maintenance.hibernate(self._clock() - threshold, _NEVER_STOP).count

    def cleanup_expired(self) -> int:
        """Remove every expired session; return how many."""
        self._ensure_open()
        return self._maintenance.expire(self._clock(), _NEVER_STOP).count

    def run_maintenance(self, stop: Callable[[], bool] = _NEVER_STOP) -> None:
        """One sweeper pass: hibernation (if ``hibernate_after_ms``) then expiry."""
        if self._hibernate_after is not None and not stop():
            self._maintenance.hibernate(self._clock() - self._hibernate_after, stop)
        if not stop():
            self._maintenance.expire(self._clock(), stop)

    # -- mailbox -------------------------------------------------------------------
    def _require_live(self, sid: str) -> None:
        if self._live(sid, self._clock()) is None:
            raise SessionNotFound(f"session {sid!r} does not exist (or has expired)")

    def send(self, session_id: SessionId, message: Any, *, priority: bool = False) -> None:
        """Queue ``message`` (any msgpack-able value) for the session.  Priority
        messages overtake every normal one."""
        sid = self._check(session_id)
        encoded = codec.encode_value(message)
        self._require_live(sid)
        self._mailbox.send(sid, encoded, bool(priority))

    def receive(
        self, session_id: SessionId, *, max_messages: int = 1, timeout: float | None = None
    ) -> list[Any]:
        """Up to ``max_messages`` messages, priority ones first, each delivered once.

        With none queued, wait up to ``timeout`` seconds (None: do not wait).  Raises
        ``SessionCancelled`` if the session is cancelled while waiting.
        """
        sid = self._check(session_id)
        if not isinstance(max_messages, int) or max_messages < 1:
            raise ConfigError("max_messages must be a whole number >= 1")
        if timeout is not None and timeout < 0:
            raise ConfigError("timeout must be None or >= 0 seconds")
        now = self._clock
        raw = self._mailbox.receive(
            sid, max_messages, timeout, lambda: self._live(sid, now()) is not None
        )
        return [codec.decode_value(m) for m in raw]

    def pending(self, session_id: SessionId) -> int:
        """How many messages wait for the session."""
        return self._mailbox.pending(self._check(session_id))

    def waiters(self, session_id: SessionId) -> int:
        """How many consumers in this process are blocked in ``receive`` for the
        session (for monitoring, and for tests that must not sleep)."""
        return self._mailbox.waiters(self._check(session_id))

    def cancel(self, session_id: SessionId) -> bool:
        """Delete the session, drop its messages, and wake blocked consumers with
        ``SessionCancelled``.  True if the session existed."""
        return self._remove(session_id, EventKind.CANCELLED)

    # -- stats and lifecycle ---------------------------------------------------------
    def stats(self) -> Stats:
        self._ensure_open()
        reported = self._b.stats() if self._b.stats is not None else BackendStats()
        sessions = reported.sessions
        hibernated = reported.hibernated
        if sessions is None or hibernated is None:
            counted = hibernated_counted = 0
            for batch in walk_records(self._b, self._batch):
                counted += len(batch)
                hibernated_counted += sum(r.hibernated for r in batch)
            sessions = counted if sessions is None else sessions
            hibernated = hibernated_counted if hibernated is None else hibernated
        return Stats(
            backend=self.backend_name,
            sessions=sessions,
            active=sessions - hibernated,
            hibernated=hibernated,
            memory_bytes=reported.memory_bytes,
            capabilities=self._b.capabilities,
            iteration="native" if self._b.iterate is not None else "fallback",
        )

    def native(self, area: str) -> bool:
        """Whether an area ("iteration", "hibernation", "expiry", "mailbox", "find",
        "transact") is served by the backend (True) or the core's fallback (False)."""
        hooks = {
            "iteration": self._b.iterate,
            "hibernation": self._b.idle_ids,
            "expiry": self._b.expired_ids,
            "mailbox": self._b.mailbox,
            "find": self._b.find,
            "transact": True if self._b.native_transact else None,
        }
        if area not in hooks:
            raise UnsupportedOperation(f"unknown area {area!r}; known: {', '.join(hooks)}")
        return hooks[area] is not None

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, *, urgent: bool = False) -> None:
        """Stop the sweeper and release the backend.  Idempotent.

        ``urgent=False`` lets a running sweep pass finish.  ``urgent=True`` interrupts
        it at the next session and returns at once; acknowledged writes are kept.
        """
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.stop(urgent=urgent)
        self._mailbox.close()
        self._b.call_all("torpor_close", urgent=urgent)

    def __enter__(self) -> Manager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _timeout(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"a timeout must be None or a whole number of ms >= 0, not {value!r}")
    return value
