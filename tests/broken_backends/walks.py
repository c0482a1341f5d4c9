"""Broken walks and mailboxes (issue 8, bug classes 4 and 5).

Each is a small, realistic mistake on top of a working backend; ``SortedKeys`` and
``OwnMailbox`` are those working backends (a native sorted-key walk and a mailbox of
the backend's own), and pass the whole kit.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tests.minimal_backend import MinimalBackend
from torpor import CANCEL, EXPIRE, Capability, Record, Removal
from torpor.errors import ManagerClosed, SerializationError, SessionCancelled, SessionNotFound
from torpor.plugins.ets_like import EtsLikeBackend

# -- walks ---------------------------------------------------------------------------


__all__ = [
    "CaseInsensitiveWalk",
    "HibernationDropsMail",
    "HugeTimeoutOverflows",
    "KeepsMailOnDelete",
    "OnlyCancelWakesWaiters",
    "OwnMailbox",
    "PendingCountsOneLane",
    "PriorityScansTheBacklog",
    "ReadsTheBatchAfterItsLock",
    "ReseekSkipsTheNextKey",
    "SmallStoreInOneBatch",
    "SortedKeys",
    "TimeoutDropsAPartialBatch",
    "WalksByCreationTime",
]


class SortedKeys(MinimalBackend):
    """A correct native walk over keys kept sorted as bytes, as LMDB keeps them.  Each
    batch re-seeks from the last key it returned, as an LMDB cursor's ``set_range``
    does, so no snapshot outlives a batch and memory follows the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[bytes] = []

    def torpor_capabilities(self) -> list[Capability]:
        return [Capability.NATIVE_ITERATION]

    def torpor_store(self, record: Record) -> None:
        with self.lock:
            if record.id not in self.blobs:
                bisect.insort(self.keys, record.id.encode())
            self.blobs[record.id] = record.blob

    def torpor_delete(self, session_id: str) -> bool:
        with self.lock:
            if self.blobs.pop(session_id, None) is None:
                return False
            del self.keys[bisect.bisect_left(self.keys, session_id.encode())]
            return True

    def conformance_plant(self, key: bytes, value: bytes) -> None:
        with self.lock:
            if _as_stored(key) not in self.blobs:
                bisect.insort(self.keys, key)
        super().conformance_plant(key, value)

    def torpor_iterate(
        self, cursor: bytes | None, batch_size: int
    ) -> tuple[Sequence[tuple[str | bytes, bytes]], bytes | None]:
        with self.lock:
            start = self._seek(cursor)
            keys = self.keys[start : start + batch_size]
            items = [(k, self.blobs[k]) for k in map(_as_stored, keys)]  # type: ignore[index]
        return items, (keys[-1] if len(keys) == batch_size else None)

    def _seek(self, last: bytes | None) -> int:
        """Where the batch after ``last`` starts: the first key >= ``last``, stepping
        past it only if it is ``last`` itself (it may have been deleted since)."""
        if last is None:
            return 0
        position = bisect.bisect_left(self.keys, last)
        if position < len(self.keys) and self.keys[position] == last:
            position += 1
        return position


def _as_stored(key: bytes) -> str | bytes:
    """How MinimalBackend keys its dict: ids as ``str``, foreign non-UTF-8 keys as
    ``bytes``."""
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return key


class ReseekSkipsTheNextKey(SortedKeys):
    """Re-seeks with "``set_range(last)``, then step once past it", forgetting that
    ``set_range`` lands on the *next* key when ``last`` was deleted meanwhile: deleting
    the last key of a batch between batches skips the first key of the next one."""

    def _seek(self, last: bytes | None) -> int:
        return 0 if last is None else bisect.bisect_left(self.keys, last) + 1


class WalksByCreationTime(MinimalBackend):
    """Keyset pages in creation order, as ``WHERE (created_at, id) > ? ORDER BY
    created_at, id LIMIT ?`` would, with no high-water mark: an id deleted and created
    again during the walk is filed later in that order, and the walk meets it twice."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[tuple[int, bytes]] = []
        self.created: dict[bytes, int] = {}

    def torpor_capabilities(self) -> list[Capability]:
        return [Capability.NATIVE_ITERATION]

    def torpor_store(self, record: Record) -> None:
        with self.lock:
            self._file(record.id.encode(), record.created_at)
            self.blobs[record.id] = record.blob

    def torpor_delete(self, session_id: str) -> bool:
        with self.lock:
            self._file(session_id.encode(), None)
            return self.blobs.pop(session_id, None) is not None

    def conformance_plant(self, key: bytes, value: bytes) -> None:
        with self.lock:
            self._file(key, -1)  # no creation time to read: first in the order
        super().conformance_plant(key, value)

    def _file(self, key: bytes, created_at: int | None) -> None:
        if created_at is not None and self.created.get(key) == created_at:
            return  # a rewrite keeps its place
        old = self.created.pop(key, None)
        if old is not None:
            self.order.remove((old, key))
        if created_at is not None:
            bisect.insort(self.order, (created_at, key))
            self.created[key] = created_at

    def torpor_iterate(
        self, cursor: tuple[int, bytes] | None, batch_size: int
    ) -> tuple[Sequence[tuple[str | bytes, bytes]], tuple[int, bytes] | None]:
        with self.lock:
            start = 0 if cursor is None else bisect.bisect_right(self.order, cursor)
            page = self.order[start : start + batch_size]
            items = [(k, self.blobs[k]) for k in (_as_stored(key) for _, key in page)]  # type: ignore[index]
        return items, (page[-1] if len(page) == batch_size else None)


class ReadsTheBatchAfterItsLock(EtsLikeBackend):
    """ets_like's walk with the batch built by a generator expression ("lazy: memory
    follows the batch") inside the lock: the generator runs only when the manager reads
    the batch, after the lock is released, so a session deleted in between makes the
    walk raise ``KeyError``.  Only a thread switch at that moment shows it."""

    def torpor_iterate(
        self, cursor: Any, batch_size: int
    ) -> tuple[Iterable[tuple[str, Record]], Any]:
        with self._lock:
            start, end = cursor or (0, self._order.next_seq)
            ids, position = self._order.walk(start, end, batch_size)
            items = ((sid, self._entries[sid].record) for sid in ids)
        return items, (None if position is None else (position, end))


class SmallStoreInOneBatch(EtsLikeBackend):
    """Returns a store of fewer than 5,000 sessions as one batch, whatever
    ``batch_size`` ("a round trip per batch is wasteful for a small store"): memory
    follows the store, not the batch, below a size the kit's memory test never
    compares against a larger one."""

    small_store = 5_000

    def torpor_iterate(
        self, cursor: Any, batch_size: int
    ) -> tuple[Sequence[tuple[str, Record]], Any]:
        if cursor is None and len(self._entries) < self.small_store:
            batch_size = self.small_store
        return super().torpor_iterate(cursor, batch_size)


class CaseInsensitiveWalk(MinimalBackend):
    """Keeps ids exactly, but walks them in a case-insensitive collation, as ``WHERE id
    > :last ORDER BY id LIMIT :n`` does on a column declared with one: ids that
    collate equal ("Straße", "STRASSE", "strasse") and straddle a batch boundary are
    skipped, since none of them is greater than the last one returned."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[tuple[str, bytes]] = []  # (collation key, id), sorted

    @staticmethod
    def _collate(key: bytes) -> str:
        return key.decode("utf-8", "surrogateescape").casefold()

    def torpor_capabilities(self) -> list[Capability]:
        return [Capability.NATIVE_ITERATION]

    def torpor_store(self, record: Record) -> None:
        with self.lock:
            if record.id not in self.blobs:
                key = record.id.encode()
                bisect.insort(self.order, (self._collate(key), key))
            self.blobs[record.id] = record.blob

    def torpor_delete(self, session_id: str) -> bool:
        with self.lock:
            if self.blobs.pop(session_id, None) is None:
                return False
            key = session_id.encode()
            self.order.remove((self._collate(key), key))
            return True

    def conformance_plant(self, key: bytes, value: bytes) -> None:
        with self.lock:
            if _as_stored(key) not in self.blobs:
                bisect.insort(self.order, (self._collate(key), key))
        super().conformance_plant(key, value)

    def torpor_iterate(
        self, cursor: str | None, batch_size: int
    ) -> tuple[Sequence[tuple[str | bytes, bytes]], str | None]:
        with self.lock:
            start = 0 if cursor is None else bisect.bisect_right(self.order, cursor, key=_first)
            page = self.order[start : start + batch_size]
            items = [(k, self.blobs[k]) for k in (_as_stored(key) for _, key in page)]  # type: ignore[index]
        return items, (page[-1][0] if len(page) == batch_size else None)


def _first(item: tuple[str, bytes]) -> str:
    return item[0]


# -- mailboxes -----------------------------------------------------------------------


class _Lanes:
    """One session's mail: a priority and a normal lane, each FIFO."""

    def __init__(self) -> None:
        self.priority: deque[bytes] = deque()
        self.normal: deque[bytes] = deque()
        self.ended: type[Exception] | None = None
        self.waiters = 0

    def put(self, message: bytes, priority: bool) -> None:
        (self.priority if priority else self.normal).append(message)

    def take(self, limit: int) -> list[bytes]:
        taken: list[bytes] = []
        for lane in (self.priority, self.normal):
            while lane and len(taken) < limit:
                taken.append(lane.popleft())
        return taken

    def __len__(self) -> int:
        return len(self.priority) + len(self.normal)

    def clear(self) -> None:
        self.priority.clear()
        self.normal.clear()


class _Mailbox:
    """A mailbox of the backend's own, one box per id, under the backend's record
    lock: the liveness check and the append of ``send`` are one step, and so are a
    removal and the discard of the mail (the backend calls :meth:`end` inside its
    transaction)."""

    lanes: Callable[[], _Lanes] = _Lanes

    def __init__(self, lock: threading.Lock, incarnation_of: Callable[[str], int | None]) -> None:
        self._cond = threading.Condition(lock)
        self._incarnation_of = incarnation_of
        self._boxes: dict[str, _Lanes] = {}
        self._closed = False

    def send(self, session_id: str, incarnation: int, message: bytes, priority: bool) -> bool:
        with self._cond:
            self._refuse_if_closed()
            if self._incarnation_of(session_id) != incarnation:
                return False
            box = self._boxes.get(session_id)
            if box is None:
                box = self._boxes[session_id] = self.lanes()
            box.put(message, priority)
            self._cond.notify_all()
            return True

    def receive(
        self, session_id: str, incarnation: int, max_messages: int, timeout: float
    ) -> list[bytes]:
        deadline = time.monotonic() + timeout
        with self._cond:
            box = self._join(session_id, incarnation)
            try:
                while not (taken := box.take(max_messages)):
                    if not self._wait(session_id, box, deadline):
                        return []
                return taken
            finally:
                self._leave(session_id, box)

    def pending(self, session_id: str, incarnation: int) -> int:
        with self._cond:
            box = self._boxes.get(session_id)
            live = self._incarnation_of(session_id) == incarnation
            return len(box) if live and box is not None else 0

    def waiters(self, session_id: str) -> int:
        with self._cond:
            box = self._boxes.get(session_id)
            return 0 if box is None else box.waiters

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def end(self, session_id: str, removal: Removal) -> None:
        """The session was removed or replaced: discard its mail, wake its receivers.
        Called with the lock held."""
        box = self._boxes.pop(session_id, None)
        if box is not None:
            box.clear()
            box.ended = SessionCancelled if removal is CANCEL else SessionNotFound
            self._cond.notify_all()

    # -- for receive (with the lock held) ----------------------------------------------
    def _join(self, session_id: str, incarnation: int) -> _Lanes:
        self._refuse_if_closed()
        if self._incarnation_of(session_id) != incarnation:
            raise SessionNotFound(f"session {session_id!r} does not exist")
        box = self._boxes.get(session_id)
        if box is None:
            box = self._boxes[session_id] = self.lanes()
        box.waiters += 1
        return box

    def _leave(self, session_id: str, box: _Lanes) -> None:
        box.waiters -= 1
        if not box.waiters and not box and self._boxes.get(session_id) is box:
            del self._boxes[session_id]

    def _wait(self, session_id: str, box: _Lanes, deadline: float) -> bool:
        """Wait for mail; False at the deadline.  Raises if the session or the
        mailbox ended meanwhile."""
        self._refuse_if_closed()
        if box.ended is not None:
            raise box.ended(f"session {session_id!r} ended while waiting")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self._cond.wait(min(remaining, 60.0))
        self._refuse_if_closed()
        return True

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise ManagerClosed("this mailbox is closed")


class OwnMailbox(MinimalBackend):
    """A correct backend with its own mailbox (``SHARED_MAILBOX``): records and mail
    change together under one lock."""

    mailbox_type: Callable[[threading.Lock, Callable[[str], int | None]], _Mailbox] = _Mailbox

    def __init__(self) -> None:
        super().__init__()
        self.mail = self.mailbox_type(self.lock, self._incarnation_of)

    def torpor_capabilities(self) -> list[Capability]:
        return [Capability.ATOMIC_UPDATE, Capability.SHARED_MAILBOX]

    def torpor_mailbox(self) -> _Mailbox:
        return self.mail

    def torpor_transact(
        self, session_id: str, fn: Callable[[bytes | None], Record | Removal | None]
    ) -> None:
        with self.lock:
            current = self.blobs.get(session_id)
            change = fn(current)
            if isinstance(change, Removal):
                self.blobs.pop(session_id, None)
                self._ended(session_id, change)
            elif isinstance(change, Record):
                if current is not None and _incarnation(current) != change.incarnation:
                    self._ended(session_id, EXPIRE)  # created over an expired record
                self.blobs[session_id] = change.blob

    def _ended(self, session_id: str, removal: Removal) -> None:
        self.mail.end(session_id, removal)

    def _incarnation_of(self, session_id: str) -> int | None:
        blob = self.blobs.get(session_id)
        return None if blob is None else _incarnation(blob)


def _incarnation(blob: bytes) -> int | None:
    try:
        return Record.from_blob(blob).incarnation
    except SerializationError:
        return None  # damaged: no live incarnation


class KeepsMailOnDelete(OwnMailbox):
    """Ends a session's mail for the removals its author read about, cancel (DESIGN
    §7) and expiry, and not for a plain delete: the messages stay, a consumer blocked
    on the deleted session sleeps on, and the id created again receives the old mail."""

    def _ended(self, session_id: str, removal: Removal) -> None:
        if removal is CANCEL or removal is EXPIRE:
            super()._ended(session_id, removal)


class _TellsOnlyCancels(_Mailbox):
    def end(self, session_id: str, removal: Removal) -> None:
        box = self._boxes.pop(session_id, None)
        if box is not None:
            box.clear()
            if removal is CANCEL:  # "only a cancel is news to a waiter"
                box.ended = SessionCancelled
                self._cond.notify_all()


class OnlyCancelWakesWaiters(OwnMailbox):
    """Discards the mail on every removal but wakes blocked receivers only on a
    cancel: a consumer blocked on a deleted or expired session waits out its whole
    timeout and then gets ``[]`` instead of ``SessionNotFound``."""

    mailbox_type = _TellsOnlyCancels


class _FillsTheBatch(_Mailbox):
    def receive(
        self, session_id: str, incarnation: int, max_messages: int, timeout: float
    ) -> list[bytes]:
        if timeout == 0:
            return super().receive(session_id, incarnation, max_messages, timeout)
        # Given time, gather a full batch ...
        deadline = time.monotonic() + timeout
        with self._cond:
            box = self._join(session_id, incarnation)
            try:
                taken: list[bytes] = []
                while len(taken) < max_messages:
                    more = box.take(max_messages - len(taken))
                    taken.extend(more)
                    if not more and not self._wait(session_id, box, deadline):
                        return []  # ... and at the deadline, forget what was taken
                return taken
            finally:
                self._leave(session_id, box)


class TimeoutDropsAPartialBatch(OwnMailbox):
    """``receive(max_messages=5, timeout=t)`` waits until it has 5 messages, and at the
    deadline returns ``[]``: the messages it had already taken are lost."""

    mailbox_type = _FillsTheBatch


class _OneList(_Lanes):
    """Every message in arrival order, tagged with its lane."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[tuple[bool, bytes]] = []

    def put(self, message: bytes, priority: bool) -> None:
        self.items.append((priority, message))

    def take(self, limit: int) -> list[bytes]:
        taken: list[bytes] = []
        while self.items and len(taken) < limit:
            first = next((i for i, (urgent, _) in enumerate(self.items) if urgent), 0)
            taken.append(self.items.pop(first)[1])
        return taken

    def __len__(self) -> int:
        return len(self.items)

    def clear(self) -> None:
        self.items.clear()


class _ScanningMailbox(_Mailbox):
    lanes = _OneList


class PriorityScansTheBacklog(OwnMailbox):
    """One list per session, scanned for the first priority message: correct order,
    but a priority receive behind a backlog costs the whole backlog."""

    mailbox_type = _ScanningMailbox


class _PendingCountsTheNormalLane(_Mailbox):
    def pending(self, session_id: str, incarnation: int) -> int:
        with self._cond:
            box = self._boxes.get(session_id)
            if box is None or self._incarnation_of(session_id) != incarnation:
                return 0
            return len(box.normal)  # "the queue", as LLEN of a session's list would say


class PendingCountsOneLane(OwnMailbox):
    """``pending`` reports the length of the normal lane only, forgetting the separate
    priority lane: mail sent with ``priority=True`` is never counted."""

    mailbox_type = _PendingCountsTheNormalLane


class _FreesMailOnCompaction(_Mailbox):
    def compact(self, session_id: str) -> None:
        """Free a session's queued mail unless a consumer waits for it (called with
        the lock held)."""
        box = self._boxes.get(session_id)
        if box is not None and not box.waiters:
            box.clear()


class HibernationDropsMail(OwnMailbox):
    """Frees a session's queued mail whenever it stores the session's compact
    (hibernated) form ("an idle session's pending mail is stale"): messages queued
    for a session that still exists vanish, in both lanes."""

    mailbox_type = _FreesMailOnCompaction

    def torpor_transact(
        self, session_id: str, fn: Callable[[bytes | None], Record | Removal | None]
    ) -> None:
        def compacting(current: bytes | None) -> Record | Removal | None:
            change = fn(current)
            if isinstance(change, Record) and change.hibernated and current is not None:
                assert isinstance(self.mail, _FreesMailOnCompaction)
                self.mail.compact(session_id)
            return change

        super().torpor_transact(session_id, compacting)


class _WaitsTheWholeTimeout(_Mailbox):
    def _wait(self, session_id: str, box: _Lanes, deadline: float) -> bool:
        self._refuse_if_closed()
        if box.ended is not None:
            raise box.ended(f"session {session_id!r} ended while waiting")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self._cond.wait(remaining)  # "a timeout is a timeout": no slices
        self._refuse_if_closed()
        return True


class HugeTimeoutOverflows(OwnMailbox):
    """Waits out the whole remaining timeout in one ``Condition.wait``: on an empty
    mailbox, ``receive(timeout=1e300)`` raises a raw ``OverflowError`` instead of
    waiting for mail."""

    mailbox_type = _WaitsTheWholeTimeout


BROKEN: dict[str, str] = {
    "ReseekSkipsTheNextKey": "iteration",
    "WalksByCreationTime": "iteration",
    "ReadsTheBatchAfterItsLock": "iteration",
    "KeepsMailOnDelete": "mailbox",
    "OnlyCancelWakesWaiters": "mailbox",
    "TimeoutDropsAPartialBatch": "mailbox",
    "PriorityScansTheBacklog": "mailbox",
    "PendingCountsOneLane": "mailbox",
    "HibernationDropsMail": "mailbox",
    "HugeTimeoutOverflows": "mailbox",
    "SmallStoreInOneBatch": "iteration",
    "CaseInsensitiveWalk": "ids",
}
"""Each broken backend and the area of the kit that must catch it."""
