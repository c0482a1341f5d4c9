"""The ets_like backend of torpor 0.1 (commit b7d1a9f), kept so that one run can
compare today's ets_like with it.

0.1 kept every active session as its decoded dict, so every write decoded the bytes
the manager had just encoded, and every read copied the dict out (``copy_data``);
hibernated sessions were compressed bytes.  This is that backend's data path,
verbatim but for ``torpor_stats`` (not measured).  It is a copy rather than a
subclass of today's ``EtsLikeBackend`` on purpose: a subclass would inherit whatever
new hooks and private fields the backend grows, and measure a mixture.  It shares the
index helpers and the capability claims, which the stored form does not change.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from torpor import Capability, Record, codec
from torpor.plugins.ets_like._backend import CAPABILITIES
from torpor.plugins.ets_like._indexes import SeqIndex, TimeIndex

__all__ = ["LegacyEtsLikeBackend", "legacy_backend"]


@dataclass(slots=True)
class _Entry:
    record: Record
    seq: int


def _live(record: Record) -> Record:
    """0.1's ``Record.live()``: the active form with decoded data and no bytes."""
    if record.hibernated or record.data is not None:
        return record
    assert record.payload is not None
    return Record(
        record.id, record.created_at, record.last_accessed, record.timeout_ms, record.version,
        False, record.incarnation, None, codec.decode_data(record.payload),
    )  # fmt: skip


class LegacyEtsLikeBackend:
    """ets_like as in torpor 0.1: live dicts for active sessions."""

    name = "ets_like (0.1 path)"

    def __init__(self, *, index_bucket_ms: int = 1000) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._order = SeqIndex()
        self._idle = TimeIndex(index_bucket_ms)
        self._expiry = TimeIndex(index_bucket_ms)

    def torpor_capabilities(self) -> Iterable[Capability]:
        return CAPABILITIES

    def torpor_close(self, urgent: bool) -> None:
        if urgent:
            return
        with self._lock:
            self._entries.clear()
            self._order = SeqIndex()
            self._idle = TimeIndex(self._idle.width)
            self._expiry = TimeIndex(self._expiry.width)

    def torpor_fetch(self, session_id: str) -> Record | None:
        entry = self._entries.get(session_id)
        return None if entry is None else entry.record

    def torpor_store(self, record: Record) -> None:
        if record.hibernated:
            if record.data is not None:
                record = record.compacted()
        else:
            record = _live(record)
        with self._lock:
            old = self._entries.get(record.id)
            if old is None:
                seq = self._order.add(record.id)
            else:
                self._unindex(old)
                seq = old.seq
            entry = _Entry(record, seq)
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

    def torpor_iterate(
        self, cursor: Any, batch_size: int
    ) -> tuple[Sequence[tuple[str, Record]], Any]:
        with self._lock:
            start, end = cursor or (0, self._order.next_seq)
            ids, position = self._order.walk(start, end, batch_size)
            items = [(sid, self._entries[sid].record) for sid in ids]
        return items, (None if position is None else (position, end))

    def torpor_idle_ids(self, cutoff_ms: int, limit: int) -> Sequence[str]:
        with self._lock:
            return self._idle.below(cutoff_ms, limit)

    def torpor_expired_ids(self, now_ms: int, limit: int) -> Sequence[str]:
        with self._lock:
            return self._expiry.below(now_ms, limit)

    def torpor_count(self, now_ms: int) -> int:
        with self._lock:
            return len(self._entries) - self._expiry.count_below(now_ms)

    def _index(self, entry: _Entry) -> None:
        record = entry.record
        if not record.hibernated:
            self._idle.add(record.id, record.last_accessed)
        if record.timeout_ms is not None:
            self._expiry.add(record.id, record.last_accessed + record.timeout_ms)

    def _unindex(self, entry: _Entry) -> None:
        record = entry.record
        if not record.hibernated:
            self._idle.remove(record.id, record.last_accessed)
        if record.timeout_ms is not None:
            self._expiry.remove(record.id, record.last_accessed + record.timeout_ms)


def legacy_backend() -> LegacyEtsLikeBackend:
    return LegacyEtsLikeBackend()
