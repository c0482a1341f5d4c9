"""Buffered touches: reads that refresh ``last_accessed`` without a write each.

On a backend where a write is a durable commit (LMDB with ``durability="sync"``, a
SQLite file, a Redis round trip), a ``get`` that had to write its touch cost an fsync:
30 times a ``peek``.  A touch is not data, so it need not be durable at once.  A
manager with a touch resolution (``torpor_touch_resolution_ms`` > 0) therefore keeps
the refreshes of ``last_accessed`` in memory and writes them in batches, one
``transact_batch`` per ``sweep_batch_size`` sessions:

* from the sweeper, at least once per touch resolution, and before each of its
  hibernation and expiry passes;
* before ``hibernate_idle``, ``cleanup_expired`` and ``run_maintenance``, so that
  this manager's sweeps judge idleness by every read it answered;
* by ``Manager.flush()``, and by an orderly ``close()`` (an urgent one drops them);
* on a user call that finds them overdue (no sweeper, or a stalled one), or when
  more than ``_MAX_PENDING`` sessions wait.

What stays exact:

* This manager sees its own buffered touches at once: reads, ``in``, ``send`` and
  every write lay them over the stored record (:meth:`TouchBuffer.seen`).
* No session expires or hibernates anywhere because a touch was buffered: a read
  buffers its touch only while the stored record stays unexpired (and, under this
  manager's ``hibernate_after_ms``, active) for longer than the flush interval;
  a read closer to either edge writes through, as every read did before.
* A flush applies a touch only to the incarnation that was read, only forwards, and
  never to a session that had expired by the time of the read; a damaged record is
  passed over.  So a flush racing a delete, a re-creation or an update changes
  nothing it should not.

What a user trades: other processes (and ``ids()``/``len()`` walks, which read the
store) see ``last_accessed`` up to one resolution plus one flush interval old, and a
killed process loses the touches it had not written.  ``touch_resolution_ms=0``
writes every read through instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

from torpor._binding import Binding
from torpor._iteration import as_record
from torpor._record import Record
from torpor.errors import SerializationError

__all__ = ["TouchBuffer"]

log = logging.getLogger("torpor")

_MAX_PENDING: Final = 65_536  # sessions; past it a call writes them (bounded memory)

Pending = dict[str, tuple[int, int]]  # id -> (incarnation, the read's time in ms)


class TouchBuffer:
    """The buffered touches of one manager; see the module docstring."""

    def __init__(
        self,
        binding: Binding,
        interval_ms: int,
        batch_size: int,
        clock: Callable[[], int],
        hibernate_after_ms: int | None,
    ) -> None:
        self._b = binding
        self.interval_ms = interval_ms
        self._batch = batch_size
        self._clock = clock
        self._hibernate_after = hibernate_after_ms
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one flush at a time: no touch goes back in time
        self._pending: Pending = {}
        self._inflight: Pending = {}  # taken by a flush that has not committed yet
        self._oldest: int | None = None  # when the oldest pending touch was read

    def __len__(self) -> int:
        return len(self._pending) + len(self._inflight)

    def seen(self, record: Record | None) -> Record | None:
        """``record`` with this manager's buffered touch of it, if it has a newer one."""
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
        flush interval, so that no process ever expires or hibernates a session
        because of a buffered touch."""
        if stored.hibernated:
            return False  # waking is a write of the record itself
        margin = now - stored.last_accessed + self.interval_ms
        if stored.timeout_ms is not None and margin >= stored.timeout_ms:
            return False
        return self._hibernate_after is None or margin < self._hibernate_after

    def note(self, record: Record, now: int) -> bool:
        """Buffer a touch of ``record`` at ``now``; True if too many are waiting."""
        with self._lock:
            self._pending[record.id] = (record.incarnation, now)
            if self._oldest is None:
                self._oldest = now
            return len(self._pending) > _MAX_PENDING

    def overdue(self, now: int) -> bool:
        oldest = self._oldest
        return oldest is not None and now - oldest >= self.interval_ms

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
                record = as_record(current, sid)
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
            if self._pending and self._oldest is None:
                self._oldest = min(at for _, at in self._pending.values())
