"""The ets_like backend: sessions in this process, like an Erlang ETS table.

Active sessions are kept as live records (decoded Python data, no bytes); hibernated
ones as their compact form (zstd-compressed msgpack).  Like ETS, values are copied in
and out: the manager never shares a dict with a caller (``Record.to_session``).

Concurrency: one short lock guards the dict and the indexes; writes to one session are
serialised by the core's per-id locks (the backend does not implement
``torpor_transact``; in one process that is exactly as atomic).  Walks and sweeps take
the lock once per batch; ``torpor_ids`` (a snapshot of the keys), ``torpor_stats``
and an orderly close hold it for one pass over the dict.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from torpor import BackendStats, Capability, Record, check_backend_options, parse_int
from torpor.plugins.ets_like._indexes import SeqIndex, TimeIndex

__all__ = ["EtsLikeBackend", "create_backend"]


@dataclass(slots=True)
class _Entry:
    record: Record
    seq: int
    size: int | None  # measured lazily, by torpor_stats: a deep size costs ~30 µs


CAPABILITIES: frozenset[Capability] = frozenset(
    {Capability.NATIVE_ITERATION, Capability.NATIVE_HIBERNATION, Capability.NATIVE_EXPIRY}
)
"""What every EtsLikeBackend claims; also its factory's static metadata."""


class EtsLikeBackend:
    """In-process backend; see the module docstring."""

    name = "ets_like"

    def __init__(self, *, index_bucket_ms: int = 1000) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._order = SeqIndex()
        self._idle = TimeIndex(index_bucket_ms)  # active sessions by last access
        self._expiry = TimeIndex(index_bucket_ms)  # sessions with a timeout, by expiry
        self._memory = 0
        self._hibernated = 0

    # -- lifecycle ---------------------------------------------------------------
    def torpor_capabilities(self) -> Iterable[Capability]:
        return CAPABILITIES

    def torpor_close(self, urgent: bool) -> None:
        # Freeing a million live sessions takes longer than an urgent close may; the
        # memory goes when the manager is dropped.  An orderly close frees it now.
        if urgent:
            return
        with self._lock:
            self._entries.clear()
            self._order = SeqIndex()
            self._idle = TimeIndex(self._idle.width)
            self._expiry = TimeIndex(self._expiry.width)
            self._memory = self._hibernated = 0

    # -- required data hooks -------------------------------------------------------
    def torpor_fetch(self, session_id: str) -> Record | None:
        entry = self._entries.get(session_id)
        return None if entry is None else entry.record

    def torpor_store(self, record: Record) -> None:
        if record.hibernated:
            if record.data is not None:
                record = record.compacted()
        else:
            record = record.live()
        with self._lock:
            old = self._entries.get(record.id)
            size: int | None = None
            if old is None:
                seq = self._order.add(record.id)
            else:
                self._unindex(old)
                seq = old.seq  # a rewrite keeps its place in the walk
                if old.record.data is not None and old.record.data is record.data:
                    size = old.size  # a touch: same data, same size
            entry = _Entry(record, seq, size)
            self._entries[record.id] = entry
            self._index(entry)

    def torpor_delete(self, session_id: str) -> bool:
        with self._lock:
            entry = self._entries.pop(session_id, None)
            if entry is None:
                return False
            self._unindex(entry)
            self._order.remove(entry.seq)
            return True

    def torpor_ids(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    # -- native hooks --------------------------------------------------------------
    def torpor_iterate(
        self, cursor: Any, batch_size: int
    ) -> tuple[Sequence[tuple[str, Record]], Any]:
        # The cursor carries the walk's high-water mark: sessions created after the walk
        # began (a deleted id created again included) are not met, so no id comes twice.
        with self._lock:
            start, end = cursor or (0, self._order.next_seq)
            ids, position = self._order.walk(start, end, batch_size)
            items = [(sid, self._entries[sid].record) for sid in ids]
        return items, (None if position is None else (position, end))

    def torpor_idle_ids(self, cutoff_ms: int, limit: int) -> Sequence[str]:
        with self._lock:
            return self._idle.below(cutoff_ms, limit)

    def torpor_expired_ids(self, now_ms: int, limit: int) -> Sequence[str]:
        # Expired means last_accessed + timeout < now, i.e. expiry time < now.
        with self._lock:
            return self._expiry.below(now_ms, limit)

    def torpor_count(self, now_ms: int) -> int:
        # Every entry is an intact record (the manager stored it); the expired ones are
        # those filed in the expiry index below now.
        with self._lock:
            return len(self._entries) - self._expiry.count_below(now_ms)

    def torpor_stats(self) -> BackendStats:
        """Memory is the session data as held (live objects, or compact bytes),
        estimated with ``sys.getsizeof`` over the data; index overhead is not counted."""
        with self._lock:
            unmeasured = [e for e in self._entries.values() if e.size is None]
        for entry in unmeasured:  # measured outside the lock: it may take a while
            size = _measure(entry.record)
            with self._lock:
                if entry.size is None and self._entries.get(entry.record.id) is entry:
                    entry.size = size
                    self._memory += size
        with self._lock:
            return BackendStats(
                self._memory, "estimate: sys.getsizeof over each session's data as held"
            )

    # -- internals -----------------------------------------------------------------
    def _index(self, entry: _Entry) -> None:
        record = entry.record
        if record.hibernated:
            self._hibernated += 1
        else:
            self._idle.add(record.id, record.last_accessed)
        if record.timeout_ms is not None:
            self._expiry.add(record.id, record.last_accessed + record.timeout_ms)
        if entry.size is not None:
            self._memory += entry.size

    def _unindex(self, entry: _Entry) -> None:
        record = entry.record
        if record.hibernated:
            self._hibernated -= 1
        else:
            self._idle.remove(record.id, record.last_accessed)
        if record.timeout_ms is not None:
            self._expiry.remove(record.id, record.last_accessed + record.timeout_ms)
        if entry.size is not None:
            self._memory -= entry.size


def _measure(record: Record) -> int:
    """Bytes the session's data occupies as held: live objects or the compact form."""
    if record.data is None:
        return sys.getsizeof(record.payload)
    return _deep_sizeof(record.data)


def _deep_sizeof(value: object) -> int:
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        for key, item in value.items():
            size += sys.getsizeof(key) + _deep_sizeof(item)
    elif isinstance(value, list | tuple):
        for item in value:
            size += _deep_sizeof(item)
    return size


def create_backend(**options: Any) -> EtsLikeBackend:
    """Entry point ``ets_like``.  Option: ``index_bucket_ms`` (default 1000), the width
    of the time buckets of the idle and expiry indexes.  Its static metadata (what
    ``torpor backends`` and the kit read without building a backend) is declared in
    the package's ``__init__``."""
    check_backend_options("ets_like", options, {"index_bucket_ms"})
    width = parse_int("index_bucket_ms", options.get("index_bucket_ms", 1000))
    assert width is not None
    return EtsLikeBackend(index_bucket_ms=width)
