"""Buffered touches: reads that refresh ``last_accessed`` without a write each.

On a backend where a write is a durable commit (LMDB with ``durability="sync"``, a
SQLite file, a Redis round trip), a ``get`` that had to write its touch cost an fsync:
30 times a ``peek``.  A touch is not data, so it need not be durable at once.  A
manager with a touch resolution R (``torpor_touch_resolution_ms`` > 0) and a sweeper
therefore keeps the refreshes of ``last_accessed`` in memory and writes them in
batches, one ``transact_batch`` per ``sweep_batch_size`` sessions:

* from a flusher thread of its own, which looks every R/2 (the *interval*) and
  writes them once the oldest is an interval old on the manager's clock: not the
  sweeper's thread, where a long hibernation pass would hold it up;
* before ``hibernate_idle``, ``cleanup_expired`` and ``run_maintenance``, so that
  this manager's sweeps judge idleness by every read it answered (and the sweeps lay
  the touches buffered meanwhile over what they decide on);
* by ``Manager.flush()``, and by an orderly ``close()`` (an urgent one drops them);
* by any call of the manager that finds them overdue (a whole R old: the flusher is
  held up), or when more than ``_MAX_PENDING`` sessions wait.

Without a sweeper (``sweeper=False``) nothing would write them while the manager is
quiet, so reads write through, as every read did before.

What stays exact:

* This manager sees its own buffered touches at once: reads, ``in``, ``send``, every
  write and its sweeps lay them over the stored record (:meth:`TouchBuffer.seen`);
  ``generation`` lets a reader that raced a flush's commit read again.
* No session expires or hibernates anywhere because a touch was buffered: a read
  buffers its touch only while the stored record stays unexpired (and, under this
  manager's ``hibernate_after_ms``, active) for a whole R, twice the interval; a
  read closer to either edge writes through.
* A flush applies a touch only to the incarnation that was read, only forwards, and
  never to a session that had expired by the time of the read; a damaged record
  (its data included) is passed over.  So a flush racing a delete, a re-creation or
  an update changes nothing it should not.

What a user trades: other processes (and ``ids()``/``len()`` walks, which read the
store) see ``last_accessed`` up to 1.5 R old, and a killed process loses the touches
it had not written.  Processes sharing a store should share ``hibernate_after_ms``:
a process with a shorter one may hibernate a session another read moments ago (the
next ``get`` wakes it; nothing is lost).  ``touch_resolution_ms=0`` writes every
read through instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Final

from torpor._binding import Binding
from torpor._iteration import intact
from torpor._record import Record
from torpor.errors import SerializationError

__all__ = ["TouchBuffer"]

_MAX_PENDING: Final = 65_536  # sessions; past it a call writes them (bounded memory)

Pending = dict[str, tuple[int, int]]  # id -> (incarnation, the read's time in ms)


class TouchBuffer:
    """The buffered touches of one manager; see the module docstring."""

    def __init__(
        self,
        binding: Binding,
        resolution_ms: int,
        batch_size: int,
        clock: Callable[[], int],
        hibernate_after_ms: int | None,
        limit: int,
    ) -> None:
        self._b = binding
        self.resolution_ms = resolution_ms
        self.interval_ms = max(resolution_ms // 2, 1)
        self._batch = batch_size
        self._limit = limit
        self.generation = 0  # counts flush commits: see seen()
        self._clock = clock
        self._hibernate_after = hibernate_after_ms
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one flush at a time: no touch goes back in time
        self._pending: Pending = {}
        self._inflight: Pending = {}  # taken by a flush that has not committed yet
        self._oldest: int | None = None  # when the oldest pending touch was read

    def __len__(self) -> int:
        # Under the lock: a flush swaps _pending for _inflight in two steps.
        with self._lock:
            return len(self._pending) + len(self._inflight)

    def seen(self, record: Record | None) -> Record | None:
        """``record`` with this manager's buffered touch of it, if it has a newer one.

        A reader that fetched the record before a flush committed and looks here after
        the flush let go of its touches would miss both: read ``generation`` before
        fetching and fetch again if it changed."""
        if record is None or not (self._pending or self._inflight):
            return record
        touch = self._pending.get(record.id) or self._inflight.get(record.id)
        if touch is None or touch[0] != record.incarnation or touch[1] <= record.last_accessed:
            return record
        return record.touched(touch[1])

    def may_defer(self, stored: Record, now: int) -> bool:
        """Whether a read at ``now`` may buffer its touch of ``stored`` (the record as
        the store holds it): only while, unflushed, the stored record stays unexpired
        and (under this manager's ``hibernate_after_ms``) active for longer than the
        resolution (twice the flush interval: a flush may come late by one), so that
        no process ever expires or hibernates a session because of a buffered touch."""
        if stored.hibernated:
            return False  # waking is a write of the record itself
        margin = now - stored.last_accessed + self.resolution_ms
        if stored.timeout_ms is not None and margin >= stored.timeout_ms:
            return False
        return self._hibernate_after is None or margin < self._hibernate_after

    def note(self, record: Record, now: int) -> bool:
        """Buffer a touch of ``record`` at ``now``; True if too many are waiting."""
        with self._lock:
            known = self._pending.get(record.id)
            if known is None or known[0] != record.incarnation or known[1] < now:
                self._pending[record.id] = (record.incarnation, now)  # never back in time
            if self._oldest is None:
                self._oldest = now
            return len(self._pending) > _MAX_PENDING

    def due(self) -> bool:
        """Whether the oldest buffered touch is an interval old (on the manager's
        clock, which tests drive): the flusher writes them then."""
        oldest = self._oldest
        return oldest is not None and self._clock() - oldest >= self.interval_ms

    def overdue(self) -> bool:
        """Whether the oldest buffered touch is a whole resolution old: the flusher
        (every half of it) is held up, and the next call writes them.  Every call of
        the manager asks: the clock is read only while touches wait."""
        oldest = self._oldest
        return oldest is not None and self._clock() - oldest >= self.resolution_ms

    def flush(self) -> int:
        """Write the buffered touches; returns how many records changed.  A failure
        puts the unwritten touches back (newer ones read meanwhile win) and raises."""
        with self._flushing:
            with self._lock:
                taken, self._pending, self._oldest = self._pending, {}, None
                self._inflight = taken
            written = 0
            ids = list(taken)
            try:
                for start in range(0, len(ids), self._batch):
                    chunk = ids[start : start + self._batch]
                    written += self._write(chunk, taken)
                    self.generation += 1  # before they leave the overlay: see seen()
                    for sid in chunk:
                        del taken[sid]  # done: a failure later puts back only the rest
            except BaseException:
                self._restore(taken)
                raise
            finally:
                self._inflight = {}
            return written

    def _write(self, chunk: list[str], taken: Pending) -> int:
        decided: dict[str, bool] = {}  # per id; a retried transaction decides again

        def fn(sid: str, current: object) -> Record | None:
            decided[sid] = False
            try:
                record = intact(current, sid, self._limit)
            except SerializationError:
                return None  # never rewritten; reads and walks report it
            incarnation, at = taken[sid]
            if (
                record is None
                or record.incarnation != incarnation
                or record.last_accessed >= at
                or record.is_expired(at)
            ):
                return None
            decided[sid] = True
            return record.touched(at)

        self._b.transact_batch(chunk, fn)
        return sum(decided.values())

    def _restore(self, taken: Pending) -> None:
        with self._lock:
            for sid, touch in taken.items():
                newer = self._pending.get(sid)
                if newer is None or newer[1] < touch[1]:
                    self._pending[sid] = touch
            if self._pending:
                # Counted from the failure: the next attempt is a resolution away, not
                # at every call meanwhile.
                self._oldest = self._clock()
