"""Hibernation and expiry passes, and the background sweeper that runs them.

A pass finds candidates (through the backend's index when it has one, by a batched
scan otherwise) and then re-checks and converts each one under ``transact``, so the
rules are decided here, once, for every backend.  Passes work in batches and look at
a stop flag before every session, which is how ``close(urgent=True)`` overtakes a
sweep over a million sessions without waiting for it.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from torpor._binding import Binding
from torpor._events import EventKind
from torpor._record import Record
from torpor.hookspecs import DELETE

__all__ = ["Maintenance", "PassResult", "Sweeper", "as_record", "walk_records"]

log = logging.getLogger("torpor.sweeper")

StopFlag = Callable[[], bool]
Emit = Callable[[EventKind, "str | None", int, "int | None"], None]


def as_record(value: object) -> Record | None:
    """What a backend returned -> a Record (None stays None)."""
    kind = type(value)
    if kind is bytes:  # persistent backends: the hot path
        return Record.from_blob(value)  # type: ignore[arg-type]
    if value is None or kind is Record:
        return value  # type: ignore[return-value]
    if isinstance(value, bytes | bytearray | memoryview):
        return Record.from_blob(bytes(value))
    if isinstance(value, Record):
        return value
    from torpor.errors import BackendUnavailable

    raise BackendUnavailable(
        f"backend returned a {type(value).__name__} where a Record or bytes was expected"
    )


def walk_records(binding: Binding, batch_size: int) -> Iterator[list[Record]]:
    """Batches of stored records, expired ones included.  Native walk when the backend
    has one; otherwise a snapshot of the ids, fetched one by one (DESIGN §6)."""
    if binding.iterate is not None:
        cursor: object = None
        while True:
            items, cursor = binding.iterate(cursor, batch_size)
            batch = [r for r in map(as_record, items) if r is not None]
            if batch:
                yield batch
            if cursor is None:
                return
    from torpor._ids import is_valid_id

    snapshot = [k for k in binding.ids() if isinstance(k, str) and is_valid_id(k)]
    for start in range(0, len(snapshot), batch_size):
        batch = []
        for sid in snapshot[start : start + batch_size]:
            record = as_record(binding.fetch(sid))
            if record is not None:
                batch.append(record)
        if batch:
            yield batch


class _Stop(Exception):
    """Raised inside a batch when the sweep must stop now (urgent close)."""


@dataclass
class PassResult:
    count: int = 0
    bytes_saved: int = 0
    interrupted: bool = False


class Maintenance:
    def __init__(
        self, binding: Binding, batch_size: int, emit: Emit, discard: Callable[[str], None]
    ):
        self._b = binding
        self._batch = batch_size
        self._emit = emit
        self._discard_mail = discard

    # -- hibernation -------------------------------------------------------------
    # Each batch records every id's *last* decision: a backend that retries a batch
    # (calling fn again for each id) then counts each session once, exactly.  An
    # urgent stop raises _Stop inside the batch: a native batch is rolled back whole,
    # while the per-id fallback keeps what it had already committed.
    def _run_batch(
        self, batch: Sequence[str], fn: Callable[[str, object], object], decided: dict[str, int]
    ) -> bool:
        """Apply ``fn`` to a batch; False if it was stopped.  ``decided`` is left holding
        exactly the ids whose change was committed."""
        try:
            self._b.transact_batch(batch, fn)  # type: ignore[arg-type]
        except _Stop:
            if self._b.native_batch:
                decided.clear()  # the transaction was rolled back
            return False
        return True

    def hibernate(self, cutoff: int, stop: StopFlag) -> PassResult:
        result = PassResult()
        saved: dict[str, int] = {}

        def compact(sid: str, current: object) -> Record | None:
            saved.pop(sid, None)
            if stop():
                raise _Stop
            record = as_record(current)
            if record is None or record.hibernated or record.last_accessed >= cutoff:
                return None
            payload = record.encoded_payload()  # encoded once: live data costs a msgpack pass
            compacted = record.compacted(payload)
            saved[sid] = len(payload) - len(compacted.payload or b"")
            return compacted

        for batch in self._candidates(
            self._b.idle_ids, cutoff, lambda r: not r.hibernated and r.last_accessed < cutoff, stop
        ):
            saved.clear()
            result.interrupted = not self._run_batch(batch, compact, saved)
            result.count += len(saved)
            result.bytes_saved += sum(saved.values())
            if saved:
                self._emit(EventKind.HIBERNATED, None, len(saved), sum(saved.values()))
            if result.interrupted or (self._b.idle_ids is not None and not saved):
                break
        return result

    def expire(self, now: int, stop: StopFlag) -> PassResult:
        result = PassResult()
        removed: dict[str, int] = {}

        def drop(sid: str, current: object) -> object:
            removed.pop(sid, None)
            if stop():
                raise _Stop
            record = as_record(current)
            if record is None or not record.is_expired(now):
                return None
            removed[sid] = 1
            return DELETE

        for batch in self._candidates(self._b.expired_ids, now, lambda r: r.is_expired(now), stop):
            removed.clear()
            result.interrupted = not self._run_batch(batch, drop, removed)
            for sid in removed:
                self._discard_mail(sid)
            result.count += len(removed)
            if removed:
                self._emit(EventKind.EXPIRED, None, len(removed), None)
            if result.interrupted or (self._b.expired_ids is not None and not removed):
                break
        return result

    # -- candidates --------------------------------------------------------------
    def _candidates(
        self,
        index: Callable[..., Sequence[str]] | None,
        bound: int,
        wanted: Callable[[Record], bool],
        stop: StopFlag,
    ) -> Iterator[Sequence[str]]:
        """Batches of candidate ids: from the backend's index, else from a scan."""
        if index is not None:
            while not stop():
                ids = index(bound, self._batch)
                if not ids:
                    return
                yield ids
                if len(ids) < self._batch:
                    return
            return
        for records in walk_records(self._b, self._batch):
            if stop():
                return
            ids = [r.id for r in records if wanted(r)]
            if ids:
                yield ids


class Sweeper:
    """A daemon thread that runs the manager's maintenance every ``interval_s``.

    ``kick()`` runs a pass now (tests use it instead of waiting); ``stop(urgent)``
    either lets the current pass finish or interrupts it at the next session.
    """

    def __init__(
        self, work: weakref.WeakMethod[Callable[[StopFlag], None]], interval_s: float
    ) -> None:
        # A weak reference: the thread must not keep a forgotten manager alive.
        self._work = work
        self._interval = interval_s
        self._wake = threading.Event()
        self._stopping = False
        self._urgent = False
        self._passes = 0
        self._passes_cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="torpor-sweeper", daemon=True)
        self._thread.start()

    @property
    def passes(self) -> int:
        return self._passes

    def kick(self) -> None:
        self._wake.set()

    def wait_for_pass(self, after: int, timeout: float = 30.0) -> bool:
        """Block until more than ``after`` passes have completed (for tests/CLI)."""
        deadline = time.monotonic() + timeout
        with self._passes_cond:
            while self._passes <= after:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._passes_cond.wait(remaining)
        return True

    def stop(self, *, urgent: bool) -> None:
        self._urgent = urgent
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _should_stop(self) -> bool:
        return self._urgent

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            work = self._work()
            if self._stopping or work is None:
                return
            try:
                work(self._should_stop)
            except Exception:  # a failing pass must not kill the sweeper
                log.exception("torpor sweeper pass failed; will retry next interval")
            del work  # hold the manager only while a pass runs
            with self._passes_cond:
                self._passes += 1
                self._passes_cond.notify_all()
