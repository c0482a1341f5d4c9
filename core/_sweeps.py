"""Hibernation and expiry passes over the whole store.

A pass finds candidates (through the backend's index when it has one, from the walk
otherwise) and converts them a batch at a time under ``transact_batch``, re-checking
each one with the same pure decision the manager uses (``torpor._decisions``).  Passes
look at a stop flag before every session, which is how ``close(urgent=True)``
overtakes a sweep over a million sessions without waiting for it.

A damaged record (its data included: a pass never compresses or removes what it
cannot read) never stops a pass: it is skipped and logged once.  Neither does a stale
index entry (a candidate that no longer qualifies): the index is asked for as many
more candidates next time as the pass has passed over, so it pages past them.

An expiry pass on a backend with ``torpor_expire`` lets the backend remove what is due
where the data lives, one atomic step per batch, when nothing read by this manager is
waiting in its touch buffer (a buffered touch is known only here, so then the pass
is the generic one, which lays it over each decision).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from torpor import codec
from torpor._binding import Binding
from torpor._decisions import decide_expire, decide_hibernate
from torpor._events import EventKind
from torpor._iteration import DamageLog, intact, walk
from torpor._record import Record
from torpor.errors import SerializationError
from torpor.hookspecs import Expired

__all__ = ["PassResult", "StopFlag", "Sweeps"]

_BATCHES_PER_CALL: Final = 8  # batches asked of an index per call (see _candidates)

StopFlag = Callable[[], bool]
Emit = Callable[[EventKind, "str | None", int, "int | None"], None]
Removed = Callable[[str, int], None]  # (id, incarnation): an expired session's mail must go


class _Stop(Exception):
    """Raised inside a batch when the sweep must stop now (urgent close)."""


@dataclass
class PassResult:
    count: int = 0
    interrupted: bool = False


class Sweeps:
    """The two passes of one manager."""

    def __init__(
        self,
        binding: Binding,
        batch_size: int,
        emit: Emit,
        damage: DamageLog,
        removed: Removed,
        limit: int,
        compress: Callable[[bytes], bytes],
        seen: Callable[[Record | None], Record | None],
        buffered: Callable[[], int],
    ) -> None:
        self._limit = limit
        self._compress = compress
        # The manager's buffered touches (torpor._touches), laid over each record a
        # pass decides on: a session read during the pass is not idle or expired.
        self._seen = seen
        self._buffered = buffered
        self._b = binding
        self._batch = batch_size
        self._emit = emit
        self._damage = damage
        self._removed = removed

    def hibernate(self, cutoff: int, stop: StopFlag) -> PassResult:
        def decide(record: Record | None) -> Record | None:
            return decide_hibernate(record, cutoff, self._compress)

        def wanted(record: Record) -> bool:
            return not record.hibernated and record.last_accessed < cutoff

        result = PassResult()
        for changed in self._run(self._b.idle_ids, cutoff, decide, wanted, stop, result):
            # The frame header says how large the payload was: no second encode.
            saved = sum(codec.compressed_saving(new.payload) for _, new in changed)
            self._emit(EventKind.HIBERNATED, None, len(changed), saved)
        return result

    def expire(self, now: int, stop: StopFlag) -> PassResult:
        def decide(record: Record | None) -> Any:
            return decide_expire(record, now)

        def wanted(record: Record) -> bool:
            return record.is_expired(now)

        result = PassResult()
        if self._b.expire is not None and not self._buffered():
            return self._expire_natively(self._b.expire(now, self._batch), stop, result)
        for changed in self._run(self._b.expired_ids, now, decide, wanted, stop, result):
            for old, _ in changed:
                self._removed(old.id, old.incarnation)
            self._emit(EventKind.EXPIRED, None, len(changed), None)
        return result

    def _expire_natively(
        self, steps: Iterable[Expired], stop: StopFlag, result: PassResult
    ) -> PassResult:
        iterator = iter(steps)
        try:
            while not stop():
                step = next(iterator, None)
                if step is None:
                    return result
                for key in step.damaged:
                    self._damage.note(key, "not an intact record; left by the expiry sweep")
                for sid, incarnation in step.removed:
                    self._removed(sid, incarnation)
                if step.count:
                    result.count += step.count
                    self._emit(EventKind.EXPIRED, None, step.count, None)
            result.interrupted = True
            return result
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def _run(
        self,
        index: Callable[..., Sequence[str]] | None,
        bound: int,
        decide: Callable[[Record | None], Any],
        wanted: Callable[[Record], bool],
        stop: StopFlag,
        result: PassResult,
    ) -> Iterator[list[tuple[Record, Any]]]:
        """Convert the candidates batch by batch; yield each committed batch's
        ``(old record, change)`` pairs (never empty)."""
        # Candidates an index offered that were damaged, or stale (the record no longer
        # qualifies): the index is asked past them, so a front of stale entries larger
        # than a batch never stops the pass.
        passed: set[str] = set()
        # Each id's *last* decision counts: a backend that retries a batch calls fn
        # again, and an urgent stop aborts a native batch whole.
        decided: dict[str, tuple[Record, Any]] = {}

        def fn(sid: str, current: object) -> Any:
            decided.pop(sid, None)
            if stop():
                raise _Stop
            try:
                record = intact(current, sid, self._limit)
            except SerializationError as exc:
                if sid not in passed:
                    self._damage.note(sid, str(exc))
                passed.add(sid)
                return None
            change = decide(self._seen(record))
            if change is None:
                passed.add(sid)
            else:
                assert record is not None
                decided[sid] = (record, change)
            return change

        for batch in self._candidates(index, bound, wanted, stop, passed):
            decided.clear()
            try:
                self._b.transact_batch(batch, fn)
            except _Stop:
                result.interrupted = True
                if self._b.native_batch:
                    decided.clear()  # the whole transaction was rolled back
            for sid in decided:
                passed.discard(sid)  # a retry's earlier "no" was overruled
            if decided:
                result.count += len(decided)
                yield list(decided.values())
            if result.interrupted:
                return

    def _candidates(
        self,
        index: Callable[..., Sequence[str]] | None,
        bound: int,
        wanted: Callable[[Record], bool],
        stop: StopFlag,
        passed: set[str],
    ) -> Iterator[Sequence[str]]:
        """Batches of candidate ids: from the backend's index (asking past the ones
        already passed over, several batches' worth per call), else from the walk."""
        if index is not None:
            batch = self._batch
            while not stop():
                # Each call reads the index again from its start, past every id already
                # passed over (and, where index keys lag their times, past the rows
                # just after the cutoff): fewer calls, less of that read again.
                limit = _BATCHES_PER_CALL * batch + len(passed)
                ids = index(bound, limit)
                fresh = [sid for sid in ids if sid not in passed]
                if not fresh:
                    return
                for start in range(0, len(fresh), batch):
                    if start and stop():
                        return
                    yield fresh[start : start + batch]
                if len(ids) < limit:
                    return
            return
        for records, _skipped in walk(self._b, self._batch, self._damage, self._limit):
            if stop():
                return
            ids = [r.id for r in records if wanted(r)]
            if ids:
                yield ids
