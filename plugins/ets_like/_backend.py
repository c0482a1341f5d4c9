"""The ets_like backend: sessions in this process, like an Erlang ETS table.

Every session is kept as bytes: active ones as their encoded data (msgpack), hibernated
ones as their compact form (zstd-compressed msgpack).  Like ETS, values are copied in
and out, and bytes make both copies the cheapest they can be: a write keeps the bytes
the manager encoded anyway (to check the data and its size), and a read decodes them
once, into a dict that belongs to the caller.  Live dicts, kept by torpor 0.1, cost a
second copy on every read and write (a msgpack round trip) and ~2.2x the memory of their
bytes (measured by ``torpor bench``; see docs/performance.md).

Concurrency: one short lock guards the dict and the indexes; writes to one session are
serialised by the core's per-id locks (the backend does not implement
``torpor_transact``; in one process that is exactly as atomic).  Walks and sweeps take
the lock once per batch; ``torpor_ids`` (a snapshot of the keys), ``torpor_stats``
and an orderly close hold it for one pass over the dict.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any, Final

from torpor import BackendStats, Capability, Record, check_backend_options, parse_int
from torpor.plugins.ets_like._indexes import SeqIndex, TimeIndex

__all__ = ["EtsLikeBackend", "create_backend"]


class _Entry:
    """One session as kept.  A hibernated one is held as its stored envelope (one bytes
    object: metadata and frame), not as a ``Record``: the tuple and its integers cost
    ~200 bytes, a sixth of what a hibernated chat-like session costs in all."""

    __slots__ = ("held", "key", "seq")

    def __init__(self, record: Record, seq: int, key: str) -> None:
        self.record = record
        self.seq = seq
        # The id object the store's dict holds: the indexes share it.  (A record parsed
        # from the envelope brings a copy of its id, ~80 bytes more per session.)
        self.key = key

    @property
    def record(self) -> Record:
        held = self.held
        return held if isinstance(held, Record) else Record.from_blob(held)

    @record.setter
    def record(self, record: Record) -> None:
        self.held: Record | bytes = record.blob if record.hibernated else record

    @property
    def size(self) -> int:
        """Bytes of data held: the payload, or the whole envelope."""
        held = self.held
        return len(held.payload or b"") if type(held) is Record else len(held)


ENTRY_OVERHEAD: Final = 275
"""Bytes every session costs besides its stored bytes: the entry, its slot in the
dict, its place in the walk order and its id.  An active session adds
``ACTIVE_OVERHEAD`` (the ``Record`` tuple and its integers, the idle index entry), a
session with a timeout ``TIMEOUT_OVERHEAD`` (the expiry index entry).  Measured by
tracemalloc on CPython 3.11; tests/test_compact_memory.py keeps the total within 15%
of tracemalloc for every kind of session."""
ACTIVE_OVERHEAD: Final = 190
TIMEOUT_OVERHEAD: Final = 88


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
        self._payload_bytes = 0
        self._hibernated = 0
        self._timed = 0  # sessions with a timeout: in the expiry index

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
            self._payload_bytes = self._hibernated = self._timed = 0

    # -- required data hooks -------------------------------------------------------
    def torpor_fetch(self, session_id: str) -> Record | None:
        entry = self._entries.get(session_id)
        return None if entry is None else entry.record

    def torpor_store(self, record: Record) -> None:
        entry = self._entries.get(record.id)
        held = None if entry is None else entry.held
        record = _at_rest(record, held.payload if type(held) is Record else None)
        with self._lock:
            entry = self._entries.get(record.id)
            if entry is None:
                self._entries[record.id] = entry = _Entry(
                    record, self._order.add(record.id), record.id
                )
            else:  # rewritten in place: it keeps its place in the walk
                self._unindex(entry)
                entry.record = record
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

    def torpor_iterate_ids(
        self, cursor: Any, batch_size: int, now_ms: int
    ) -> tuple[Sequence[str], Any]:
        # The same walk, keeping only ids: a hibernated entry is parsed one at a time
        # to read its expiry, so the batch never holds records (or their frames).
        with self._lock:
            start, end = cursor or (0, self._order.next_seq)
            ids, position = self._order.walk(start, end, batch_size)
            live = [sid for sid in ids if not self._entries[sid].record.is_expired(now_ms)]
        return live, (None if position is None else (position, end))

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
        with self._lock:
            count = len(self._entries)
            held = (
                self._payload_bytes
                + count * ENTRY_OVERHEAD
                + (count - self._hibernated) * ACTIVE_OVERHEAD
                + self._timed * TIMEOUT_OVERHEAD
            )
        return BackendStats(
            held,
            "bytes held: every session's stored bytes (exact), plus per session the "
            "entry, record and index overheads measured by tracemalloc",
        )

    # -- internals -----------------------------------------------------------------
    def _index(self, entry: _Entry) -> None:
        record, key = entry.record, entry.key
        if record.hibernated:
            self._hibernated += 1
        else:
            self._idle.add(key, record.last_accessed)
        if record.timeout_ms is not None:
            self._timed += 1
            self._expiry.add(key, record.last_accessed + record.timeout_ms)
        self._payload_bytes += entry.size

    def _unindex(self, entry: _Entry) -> None:
        record, key = entry.record, entry.key
        if record.hibernated:
            self._hibernated -= 1
        else:
            self._idle.remove(key, record.last_accessed)
        if record.timeout_ms is not None:
            self._timed -= 1
            self._expiry.remove(key, record.last_accessed + record.timeout_ms)
        self._payload_bytes -= entry.size


def _at_rest(record: Record, held: bytes | None) -> Record:
    """The form kept: bytes only, each object exactly as large as its content.
    ``held``: the payload kept for this id now (a touch or a wake keeps it)."""
    if record.hibernated:
        # Compressing copies into exact-size bytes already (codec.compress).
        return record if record.data is None else record.compacted()
    if record.payload is held and held is not None and record.data is None:
        return record  # a touch: the bytes kept are the bytes stored
    # msgspec over-allocates what it encodes by ~25% (tracemalloc); a copy is exact.
    return Record(
        record.id, record.created_at, record.last_accessed, record.timeout_ms, record.version,
        False, record.incarnation, bytes(memoryview(record.encoded_payload())), None,
    )  # fmt: skip


def create_backend(**options: Any) -> EtsLikeBackend:
    """Entry point ``ets_like``.  Option: ``index_bucket_ms`` (default 1000), the width
    of the time buckets of the idle and expiry indexes.  Its static metadata (what
    ``torpor backends`` and the kit read without building a backend) is declared in
    the package's ``__init__``."""
    check_backend_options("ets_like", options, {"index_bucket_ms"})
    width = parse_int("index_bucket_ms", options.get("index_bucket_ms", 1000))
    assert width is not None
    return EtsLikeBackend(index_bucket_ms=width)
