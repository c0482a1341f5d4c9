"""Every fallback the core supplies for a hook a backend does not implement.

``torpor._binding`` decides, once per manager, whether each area is served by the
backend (native) or by one of these:

* ``torpor_transact`` missing -> :class:`LockedTransact`: the backend's fetch/store/
  delete under an in-process lock per session id (atomic within one process);
* ``torpor_transact_batch`` missing -> :func:`each_transact`: one transaction per id;
* ``torpor_iterate`` missing -> :func:`snapshot_walk`: a snapshot of the ids, then
  fetch by id (docs/contract.md §6);
* ``torpor_iterate_ids`` missing -> ``ids()`` walks whole records and keeps their ids
  (``torpor._iteration.walk``);
* ``torpor_mailbox`` missing -> :class:`LocalMailbox`: in-process mailboxes that the
  manager keeps in step with the records.

Hibernation, expiry and ``find`` without an index scan the walk; that is done by the
passes themselves (``torpor._sweeps``) and the manager.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final

from torpor._ids import key_to_id
from torpor.errors import ManagerClosed, SessionCancelled, SessionNotFound
from torpor.hookspecs import CANCEL, BatchFn, Removal, TransactFn

__all__ = ["LocalMailbox", "LockedTransact", "StripedLocks", "each_transact", "snapshot_walk"]

Pair = tuple["str | bytes", Any]
_WAIT_SLICE_S: Final = 60.0  # no single wait longer than this: huge timeouts can't overflow


class StripedLocks:
    """A fixed set of locks, one chosen per key: serialises work on one session
    without one lock per session or one lock for the whole store."""

    def __init__(self, stripes: int = 256) -> None:
        self._locks = [threading.Lock() for _ in range(stripes)]

    def __call__(self, key: str) -> threading.Lock:
        return self._locks[hash(key) % len(self._locks)]


class LockedTransact:
    """``torpor_transact`` for a backend without it: fetch, decide, store or delete,
    under the session's lock.  Atomic against every writer in this process, which is
    every writer a backend without ``ATOMIC_UPDATE`` may have."""

    def __init__(
        self,
        fetch: Callable[[str], Any],
        store: Callable[[Any], None],
        delete: Callable[[str], bool],
    ) -> None:
        self._fetch, self._store, self._delete = fetch, store, delete
        self._locks = StripedLocks()

    def __call__(self, session_id: str, fn: TransactFn) -> None:
        with self._locks(session_id):
            change = fn(self._fetch(session_id))
            if change is None:
                return
            if isinstance(change, Removal):
                self._delete(session_id)
            else:
                self._store(change)


def each_transact(transact: Callable[[str, TransactFn], None]) -> Callable[..., None]:
    """``torpor_transact_batch`` for a backend without it: one transaction per id."""

    def batch(session_ids: Sequence[str], fn: BatchFn) -> None:
        for sid in session_ids:
            transact(sid, lambda current, sid=sid: fn(sid, current))  # type: ignore[misc]

    return batch


def snapshot_walk(
    ids: Callable[[], Iterable[str | bytes]], fetch: Callable[[str], Any], batch_size: int
) -> Iterator[list[Pair]]:
    """Batches of ``(key, value)``: a snapshot of the valid ids, fetched batch by batch.
    Memory follows the number of ids, not their records.  Foreign keys (not valid ids)
    come back with the value None, so that they can be counted."""
    snapshot = list(ids())
    for start in range(0, len(snapshot), batch_size):
        batch: list[Pair] = []
        for key in snapshot[start : start + batch_size]:
            sid = key_to_id(key)
            if sid is None:
                batch.append((key, None))
            elif (value := fetch(sid)) is not None:
                batch.append((sid, value))
        if batch:
            yield batch


class _Box:
    __slots__ = ("ended", "incarnation", "normal", "priority", "waiters")

    def __init__(self, incarnation: int) -> None:
        self.incarnation = incarnation
        self.priority: deque[bytes] = deque()
        self.normal: deque[bytes] = deque()
        self.ended: type[Exception] | None = None
        self.waiters = 0


class LocalMailbox:
    """In-process mailboxes: two deques per session incarnation, one condition variable.

    ``incarnation_of(session_id)`` tells the live incarnation of a session (None when
    it is missing or expired); the manager passes its own lookup.  ``send`` checks it
    and appends under the session's lock, and :meth:`end` (which the manager calls
    after every removal it commits) takes the same lock, so a message is either
    discarded with its session or refused; it never outlives it.

    Each incarnation has its own box, so a session created again under an id never
    shares a box with the old one, and the old one's receivers still learn how it
    ended (``SessionCancelled`` or ``SessionNotFound``).  Boxes are created on the
    first send or receive and dropped once empty with no receiver, so idle sessions
    cost nothing here.  Mail of an incarnation removed by *another* process (possible
    only with a multi-process backend that has no mailbox of its own) is dropped when
    the id's live incarnation next sends.  One condition variable serves every box:
    each send wakes every waiter, which is fine for tens of consumers; a backend with
    many should ship its own mailbox.
    """

    def __init__(self, incarnation_of: Callable[[str], int | None]) -> None:
        self._incarnation_of = incarnation_of
        self._boxes: dict[str, dict[int, _Box]] = {}
        self._cond = threading.Condition(threading.Lock())
        self._locks = StripedLocks()
        self._closed = False

    def _box(self, session_id: str, incarnation: int) -> _Box:
        """The box of this incarnation, made if needed (under ``_cond``)."""
        boxes = self._boxes.setdefault(session_id, {})
        box = boxes.get(incarnation)
        if box is None:
            box = boxes[incarnation] = _Box(incarnation)
        return box

    def _drop_if_idle(self, session_id: str, box: _Box) -> None:
        boxes = self._boxes.get(session_id)
        if box.waiters or box.priority or box.normal or boxes is None:
            return
        if boxes.get(box.incarnation) is box:
            del boxes[box.incarnation]
            if not boxes:
                del self._boxes[session_id]

    def send(self, session_id: str, incarnation: int, message: bytes, priority: bool) -> bool:
        with self._locks(session_id):
            if self._incarnation_of(session_id) != incarnation:
                return False
            with self._cond:
                if self._closed:
                    raise ManagerClosed("this manager is closed; open a new one")
                box = self._box(session_id, incarnation)
                (box.priority if priority else box.normal).append(message)
                # ``incarnation`` is live (checked under the session's lock), so idle
                # boxes of other incarnations hold mail no one can receive any more.
                for other in list(self._boxes[session_id].values()):
                    if other is not box and not other.waiters:
                        del self._boxes[session_id][other.incarnation]
                self._cond.notify_all()
        return True

    def receive(
        self, session_id: str, incarnation: int, max_messages: int, timeout: float
    ) -> list[bytes]:
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._closed:
                raise ManagerClosed("this manager is closed; open a new one")
            box = self._box(session_id, incarnation)
            box.waiters += 1
            try:
                # Checked once registered: a removal from now on ends this box.
                if (
                    not (box.priority or box.normal)
                    and box.ended is None
                    and self._incarnation_of(session_id) != incarnation
                ):
                    raise SessionNotFound(f"session {session_id!r} does not exist")
                while True:
                    taken = _take(box, max_messages)
                    if taken:
                        return taken
                    if box.ended is not None:
                        raise _ended(box.ended, session_id)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return []
                    self._cond.wait(min(remaining, _WAIT_SLICE_S))
            finally:
                box.waiters -= 1
                self._drop_if_idle(session_id, box)

    def pending(self, session_id: str, incarnation: int) -> int:
        with self._cond:
            box = self._boxes.get(session_id, {}).get(incarnation)
            return 0 if box is None else len(box.priority) + len(box.normal)

    def waiters(self, session_id: str) -> int:
        # Under the lock: a receiver holds it from registering until it waits, so a
        # positive count means it has passed its liveness check.
        with self._cond:
            boxes = self._boxes.get(session_id, {})
            return sum(b.waiters for b in boxes.values() if b.ended is None)

    def end(self, session_id: str, incarnation: int | None, removal: Removal) -> None:
        """The incarnation was removed: drop its messages, wake its waiters.  ``None``:
        every incarnation of the id (a damaged record was removed)."""
        reason = SessionCancelled if removal is CANCEL else SessionNotFound
        with self._locks(session_id), self._cond:
            boxes = self._boxes.get(session_id)
            if boxes is None:
                return
            for box in list(boxes.values()):
                if incarnation is None or box.incarnation == incarnation:
                    del boxes[box.incarnation]
                    self._finish(box, reason)
            if not boxes:
                del self._boxes[session_id]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for boxes in self._boxes.values():
                for box in boxes.values():
                    self._finish(box, ManagerClosed)
            self._boxes.clear()

    def _finish(self, box: _Box, reason: type[Exception]) -> None:
        box.priority.clear()
        box.normal.clear()
        box.ended = reason
        self._cond.notify_all()


def _take(box: _Box, max_messages: int) -> list[bytes]:
    taken: list[bytes] = []
    for lane in (box.priority, box.normal):
        while lane and len(taken) < max_messages:
            taken.append(lane.popleft())
    return taken


def _ended(reason: type[Exception], session_id: str) -> Exception:
    if reason is SessionCancelled:
        return SessionCancelled(f"session {session_id!r} was cancelled while waiting")
    if reason is ManagerClosed:
        return ManagerClosed(f"the manager was closed while waiting on session {session_id!r}")
    return SessionNotFound(f"session {session_id!r} was deleted while waiting")
