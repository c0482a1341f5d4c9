"""Broken sweeps, index bookkeeping and secondary indexes (issue 8, bug classes 1-3).

Each broken backend is one small, realistic mistake on top of a working backend; the
``BROKEN`` dict names the kit area that must catch it (same style as
``tests/broken_backends/``).  ``IndexedMinimal`` is the working base of the index
mistakes: a correct native secondary index, since neither first-party in-process
backend has one.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from tests.minimal_backend import MinimalBackend
from torpor import (
    DELETE,
    EXPIRE,
    Capability,
    Clock,
    Expired,
    Record,
    Removal,
    codec,
    system_clock,
)
from torpor.errors import SerializationError
from torpor.indexing import canonical_key
from torpor.plugins.ets_like import EtsLikeBackend
from torpor.plugins.ets_like._backend import _Entry

__all__ = [
    "BackfillSkipsHibernated",
    "CountSkipsHibernated",
    "CountsExpiredPending",
    "CountsReplacedSessionTwice",
    "ExpiresAtTheDeadline",
    "ExpiresDamaged",
    "ExpiresOneBatch",
    "ExpiresWithTheVersion",
    "ExpiringMinimal",
    "ExpiryQueryLimitsBeforeFilter",
    "IdleQueryFiltersAfterLimit",
    "IdleSkipsExpired",
    "IndexDictsByEncoding",
    "IndexKeptOnCancel",
    "IndexKeysNumbersAsFloat",
    "IndexNotRebuiltOnReuse",
    "IndexOnlyOnCreate",
    "IndexedMinimal",
    "MemoryForgetsDeletes",
    "NoTimeoutKeepsDeadline",
    "TouchKeepsDeadline",
    "WakeLeavesColdCopy",
    "WokenNotReindexed",
]

Pair = tuple[str, bytes]
Entry = tuple[str, bytes]  # (field, index key)


# -- bug class 1: sweeps past one batch -----------------------------------------------
class IdleQueryFiltersAfterLimit(EtsLikeBackend):
    """Files every session in its last-access index, hibernated ones too ("it is an
    index by last access"), and drops the hibernated ones from each answer *after*
    taking ``limit`` ids.  Right while one batch holds every idle session; past that,
    a page of already-hibernated sessions comes back empty and the sweep stops."""

    def _index(self, entry: _Entry) -> None:
        super()._index(entry)
        if entry.record.hibernated:
            self._idle.add(entry.record.id, entry.record.last_accessed)

    def _unindex(self, entry: _Entry) -> None:
        super()._unindex(entry)
        if entry.record.hibernated:
            self._idle.remove(entry.record.id, entry.record.last_accessed)

    def torpor_idle_ids(self, cutoff_ms: int, limit: int) -> Sequence[str]:
        with self._lock:
            page = self._idle.below(cutoff_ms, limit)
            return [sid for sid in page if not self._entries[sid].record.hibernated]


class ExpiryQueryLimitsBeforeFilter(EtsLikeBackend):
    """Keeps each session's deadline in a table in write order and answers the expiry
    query as ``SELECT id FROM (SELECT ... LIMIT n) WHERE deadline < now``: the limit
    is applied before the filter, so a page holding live sessions comes back short
    and the sweep takes it for the last one."""

    def __init__(self) -> None:
        super().__init__()
        self._deadlines: dict[str, int] = {}

    def _index(self, entry: _Entry) -> None:
        super()._index(entry)
        record = entry.record
        if record.timeout_ms is not None:
            self._deadlines[record.id] = record.last_accessed + record.timeout_ms

    def _unindex(self, entry: _Entry) -> None:
        super()._unindex(entry)
        self._deadlines.pop(entry.record.id, None)

    def torpor_expired_ids(self, now_ms: int, limit: int) -> Sequence[str]:
        with self._lock:
            page = itertools.islice(self._deadlines.items(), limit)
            return [sid for sid, deadline in page if deadline < now_ms]


# -- bug class 2: index bookkeeping across transitions ----------------------------------
class WokenNotReindexed(EtsLikeBackend):
    """Wakes a session in place ("a wake only changes the form": same version, same
    data): decompresses it, takes it off the hibernated count and moves its deadline,
    but forgets to file it back in the idle index, so it never hibernates again."""

    def torpor_store(self, record: Record) -> None:
        with self._lock:
            entry = self._entries.get(record.id)
            if (
                entry is not None
                and entry.record.hibernated
                and not record.hibernated
                and entry.record.version == record.version
            ):
                self._wake_in_place(entry, record)
                return
        super().torpor_store(record)

    def _wake_in_place(self, entry: _Entry, live: Record) -> None:
        old = entry.record
        self._hibernated -= 1
        if old.timeout_ms is not None:
            self._expiry.remove(old.id, old.last_accessed + old.timeout_ms)
        if live.timeout_ms is not None:
            self._expiry.add(live.id, live.last_accessed + live.timeout_ms)
        self._payload_bytes -= entry.size
        entry.record = live
        self._payload_bytes += entry.size


class CountSkipsHibernated(EtsLikeBackend):
    """Counts the sessions filed in its last-access index that have not expired,
    forgetting that hibernated sessions are not filed there."""

    def torpor_count(self, now_ms: int) -> int:
        with self._lock:
            filed = self._idle.below(2**63, len(self._entries))
            return sum(1 for sid in filed if not self._entries[sid].record.is_expired(now_ms))


class CountsExpiredPending(EtsLikeBackend):
    """Counts every stored record: sessions that have expired but were not swept yet
    are counted as live."""

    def torpor_count(self, now_ms: int) -> int:
        with self._lock:
            return len(self._entries)


class CountsReplacedSessionTwice(EtsLikeBackend):
    """Keeps a running count: one more for each new session (a new incarnation), one
    less for each delete.  A create over an expired session replaces that record
    without a delete, so the count goes up by one too many."""

    def __init__(self) -> None:
        super().__init__()
        self._count = 0

    def torpor_store(self, record: Record) -> None:
        with self._lock:
            entry = self._entries.get(record.id)
            if entry is None or entry.record.incarnation != record.incarnation:
                self._count += 1
        super().torpor_store(record)

    def torpor_delete(self, session_id: str) -> bool:
        removed = super().torpor_delete(session_id)
        if removed:
            with self._lock:
                self._count -= 1
        return removed

    def torpor_count(self, now_ms: int) -> int:
        with self._lock:
            return self._count - self._expiry.count_below(now_ms)


class IdleSkipsExpired(EtsLikeBackend):
    """Leaves sessions past their deadline out of the idle query ("no point compacting
    a session the expiry sweep is about to remove"): ``hibernate_idle`` misses the
    expired sessions not removed yet, which it must hibernate and count
    (docs/contract.md §5)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._clock: Clock = system_clock

    def torpor_open(self, clock: Clock) -> None:
        self._clock = clock

    def torpor_idle_ids(self, cutoff_ms: int, limit: int) -> Sequence[str]:
        now = self._clock()
        with self._lock:
            idle = self._idle._below(cutoff_ms)  # filtered before the limit is applied
            live = (sid for sid in idle if not self._entries[sid].record.is_expired(now))
            return list(itertools.islice(live, limit))


class MemoryForgetsDeletes(EtsLikeBackend):
    """Unfiles a deleted session from its indexes by hand and leaves the memory
    figure to ``torpor_stats`` ("it measures what is held"); but stats measures only
    entries not measured yet and keeps a running total, so ``memory_bytes`` never
    shrinks when sessions are deleted or expire."""

    def torpor_delete(self, session_id: str) -> bool:
        with self._lock:
            entry = self._entries.pop(session_id, None)
            if entry is None:
                return False
            record = entry.record
            if record.hibernated:
                self._hibernated -= 1
            else:
                self._idle.remove(record.id, record.last_accessed)
            if record.timeout_ms is not None:
                self._expiry.remove(record.id, record.last_accessed + record.timeout_ms)
            self._order.remove(entry.seq)
            return True


class _FiledDeadlines(EtsLikeBackend):
    """ets_like with each session's filed deadline remembered (``id -> (timeout_ms,
    deadline)``), so the expiry index is refiled from what was filed rather than
    recomputed from the old record.  Correct as it is; the two below break
    :meth:`_refile`."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._filed: dict[str, tuple[int, int]] = {}

    def _refile(self, record: Record) -> None:
        """File ``record``'s deadline in place of the one filed (lock held)."""
        self._unfile(record.id)
        if record.timeout_ms is not None:
            deadline = record.last_accessed + record.timeout_ms
            self._filed[record.id] = (record.timeout_ms, deadline)
            self._expiry.add(record.id, deadline)

    def _unfile(self, session_id: str) -> None:
        filed = self._filed.pop(session_id, None)
        if filed is not None:
            self._expiry.remove(session_id, filed[1])

    def _index(self, entry: _Entry) -> None:
        record = entry.record
        if record.hibernated:
            self._hibernated += 1
        else:
            self._idle.add(record.id, record.last_accessed)
        self._payload_bytes += entry.size
        self._refile(record)

    def _unindex(self, entry: _Entry) -> None:
        record = entry.record  # its deadline stays filed until _refile or a delete
        if record.hibernated:
            self._hibernated -= 1
        else:
            self._idle.remove(record.id, record.last_accessed)
        self._payload_bytes -= entry.size

    def torpor_delete(self, session_id: str) -> bool:
        with self._lock:
            entry = self._entries.pop(session_id, None)
            if entry is None:
                return False
            self._unindex(entry)
            self._unfile(session_id)
            self._order.remove(entry.seq)
            return True

    def torpor_close(self, urgent: bool) -> None:
        super().torpor_close(urgent)
        if not urgent:
            with self._lock:
                self._filed.clear()


class NoTimeoutKeepsDeadline(_FiledDeadlines):
    """Refiles a session's deadline only when the record has a timeout ("a session
    without one has nothing in the expiry index"): ``set_timeout(id, None)`` leaves
    the old deadline filed, and once it passes ``len()`` leaves out a live session.
    Sweeps re-check each candidate, so ``cleanup_expired`` looks right."""

    def _refile(self, record: Record) -> None:
        if record.timeout_ms is not None:
            super()._refile(record)


class TouchKeepsDeadline(_FiledDeadlines):
    """Refiles a session's deadline only when its timeout changes ("a deadline moves
    with the timeout"), not when ``last_accessed`` does: after a touch or a ``get``
    the old deadline still counts the session as expired in ``len()``, though sweeps,
    which re-check each candidate, look right."""

    def _refile(self, record: Record) -> None:
        filed = self._filed.get(record.id)
        if filed is None or filed[0] != record.timeout_ms:
            super()._refile(record)


class WakeLeavesColdCopy(MinimalBackend):
    """A hot/cold layout: active sessions in one dict, hibernated ones (compact) in
    another.  Waking writes the hot copy but leaves the cold one, so ``ids()`` and
    ``len()`` count a woken session twice."""

    def __init__(self) -> None:
        super().__init__()
        self.cold: dict[str, bytes] = {}

    def torpor_fetch(self, session_id: str) -> bytes | None:
        return self.blobs.get(session_id) or self.cold.get(session_id)

    def torpor_store(self, record: Record) -> None:
        blob = record.blob
        with self.lock:
            if record.hibernated:
                self.blobs.pop(record.id, None)
                self.cold[record.id] = blob
            else:
                self.blobs[record.id] = blob

    def torpor_delete(self, session_id: str) -> bool:
        with self.lock:
            hot = self.blobs.pop(session_id, None)
            cold = self.cold.pop(session_id, None)
            return hot is not None or cold is not None

    def torpor_ids(self) -> list[str | bytes]:
        with self.lock:
            return [*self.blobs, *self.cold]


# -- bug class 3: secondary indexes ------------------------------------------------------
class IndexedMinimal(MinimalBackend):
    """A correct native secondary index (healthy: it passes the whole kit).

    A covering index: each entry keeps the record's blob, so ``torpor_find`` answers
    without a second lookup, which is also why every write must refresh the entries.
    Keys come from ``torpor.indexing.canonical_key``, so equal values share one.
    Claims ``ATOMIC_UPDATE`` too, so that it sees each removal's reason.
    """

    name = "indexed_minimal"

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.RLock()  # type: ignore[assignment]  # transact nests stores
        self.fields: set[str] = set()
        self.index: dict[Entry, dict[str, bytes]] = {}
        self.filed: dict[str, list[Entry]] = {}  # each session's entries
        self.limit = 1 << 20

    def torpor_capabilities(self) -> Iterable[Capability]:
        return [Capability.ATOMIC_UPDATE, Capability.SECONDARY_INDEX]

    def torpor_open(self, options: Mapping[str, Any]) -> None:
        self.limit = options["max_session_bytes"]

    def torpor_store(self, record: Record) -> None:
        blob = record.blob
        with self.lock:
            self._refile(record, blob)
            self.blobs[record.id] = blob

    def torpor_delete(self, session_id: str) -> bool:
        with self.lock:
            self._unfile(session_id)
            return self.blobs.pop(session_id, None) is not None

    def torpor_transact(self, session_id: str, fn: Any) -> None:
        with self.lock:
            change = fn(self.blobs.get(session_id))
            if isinstance(change, Removal):
                self._remove(session_id, change)
            elif isinstance(change, Record):
                self.torpor_store(change)

    def torpor_create_index(self, field: str) -> None:
        with self.lock:
            if field in self.fields:
                return
            self.fields.add(field)
            for sid, blob in self.blobs.items():
                self._unfile(sid)
                self._file(sid, blob)

    def torpor_find(self, criteria: Mapping[str, Any]) -> Sequence[Pair] | None:
        with self.lock:
            for field, value in criteria.items():
                if field not in self.fields:
                    continue
                try:
                    key = self._key(value)
                except (TypeError, ValueError):
                    continue  # no session holds such a value: the manager compares
                return list(self.index.get((field, key), {}).items())
        return None

    # -- the index (under self.lock) ------------------------------------------------------
    def _key(self, value: Any) -> bytes:
        return canonical_key(value)

    def _remove(self, session_id: str, removal: Removal) -> None:
        self.torpor_delete(session_id)

    def _refile(self, record: Record, blob: bytes) -> None:
        self._unfile(record.id)
        self._file(record.id, blob)

    def _refresh(self, session_id: str, blob: bytes) -> None:
        """Rewrite the copies under the entries the session already has."""
        for entry in self.filed.get(session_id, []):
            self.index[entry][session_id] = blob

    def _file(self, session_id: str, blob: bytes) -> None:
        if not self.fields:
            return
        try:
            data = Record.from_blob(blob).to_session(self.limit).data
        except Exception:  # damaged or foreign: not indexed, the manager skips it
            return
        entries = self.filed.setdefault(session_id, [])
        for field in self.fields & data.keys():
            try:
                entry = (field, self._key(data[field]))
            except (TypeError, ValueError):
                continue
            self.index.setdefault(entry, {})[session_id] = blob
            entries.append(entry)

    def _unfile(self, session_id: str) -> None:
        for entry in self.filed.pop(session_id, []):
            holders = self.index.get(entry)
            if holders is not None:
                holders.pop(session_id, None)
                if not holders:
                    del self.index[entry]


class IndexOnlyOnCreate(IndexedMinimal):
    """Files a session's entries when it is created (version 1); later writes only
    refresh the copies under the entries it already has, as if data never changed
    its keys.  ``find`` misses every value written by ``update`` or ``save``."""

    def _refile(self, record: Record, blob: bytes) -> None:
        if record.version == 1:
            super()._refile(record, blob)
        else:
            self._refresh(record.id, blob)


class IndexNotRebuiltOnReuse(IndexedMinimal):
    """Refiles only when the version changes ("touch, timeouts and hibernation keep
    the data"), comparing the version but not the incarnation: a session created over
    an expired one with the same id is version 1 again and keeps the old keys."""

    def _refile(self, record: Record, blob: bytes) -> None:
        old = self.blobs.get(record.id)
        if old is not None and Record.from_blob(old).version == record.version:
            self._refresh(record.id, blob)
        else:
            super()._refile(record, blob)


class IndexKeptOnCancel(IndexedMinimal):
    """Removes a session's index entries on ``DELETE`` only; for ``CANCEL`` and
    ``EXPIRE`` it drops just the record ("the manager re-checks what find returns").
    The entries are full copies, so a cancelled session is still found."""

    def _remove(self, session_id: str, removal: Removal) -> None:
        if removal is DELETE:
            super()._remove(session_id, removal)
        else:
            self.blobs.pop(session_id, None)


class IndexKeysNumbersAsFloat(IndexedMinimal):
    """Keys every number by its float64 bytes, so that ``1 == 1.0 == True`` share a
    key; but ``-0.0`` has other bytes than ``0.0``, and ``-0.0 == 0 == False``."""

    def _key(self, value: Any) -> bytes:
        if isinstance(value, bool | int | float):
            return b"F" + struct.pack(">d", float(value))
        return canonical_key(value)


class BackfillSkipsHibernated(IndexedMinimal):
    """``create_index`` fills the new index from active sessions only ("a hibernated
    one is filed when it wakes"): sessions asleep when the index is created are not
    found until they are woken or written."""

    def torpor_create_index(self, field: str) -> None:
        with self.lock:
            if field in self.fields:
                return
            self.fields.add(field)
            for sid, blob in self.blobs.items():
                try:
                    if Record.from_blob(blob).hibernated:
                        continue
                except SerializationError:
                    continue  # damaged: never indexed
                self._unfile(sid)
                self._file(sid, blob)


class IndexDictsByEncoding(IndexedMinimal):
    """Keys a dict value by a hash of its encoding, which keeps the dict's insertion
    order and number types: ``{"a": 1, "b": 2}`` and ``{"b": 2.0, "a": 1}`` are equal
    but get different keys.  Other values use ``canonical_key``."""

    def _key(self, value: Any) -> bytes:
        if isinstance(value, dict):
            return hashlib.blake2b(codec.encode_value(value), digest_size=16).digest()
        return canonical_key(value)


class ExpiringMinimal(IndexedMinimal):
    """A correct native expiry sweep, ``torpor_expire`` (healthy: it passes the whole
    kit), on ``IndexedMinimal``'s atomic transactions.  No index: each step scans the
    blobs under the lock and removes at most a batch of sessions due before now,
    proving each an intact record first (a damaged value is reported and left)."""

    name = "expiring_minimal"

    def torpor_capabilities(self) -> Iterable[Capability]:
        return [*super().torpor_capabilities(), Capability.NATIVE_EXPIRY]

    def torpor_expired_ids(self, now_ms: int, limit: int) -> Sequence[str]:
        with self.lock:
            return [sid for sid, _ in itertools.islice(self._due(now_ms), limit)]

    def torpor_expire(self, now_ms: int, batch_size: int) -> Iterator[Expired]:
        reported: set[str] = set()
        while True:
            with self.lock:
                removed, damaged = [], []
                for sid, record in self._due(now_ms, reported):
                    if record is None:
                        damaged.append(sid)
                        reported.add(sid)
                        continue
                    self._remove(sid, EXPIRE)
                    removed.append((sid, self._incarnation(record)))
                    if len(removed) == batch_size:
                        break
            if removed or damaged:
                yield Expired(len(removed), removed, damaged)
            if len(removed) < batch_size or not self._more(removed):
                return

    def _due(
        self,
        now_ms: int,
        reported: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> Iterator[tuple[str, Record | None]]:
        """(id, record) of what is due; (id, None) for a damaged value not yet
        reported (never due: its deadline cannot be read)."""
        for sid, blob in list(self.blobs.items()):
            if not isinstance(sid, str):
                continue
            try:
                record = Record.of(blob, sid)
                record.session_data(self.limit)
            except SerializationError:
                if sid not in reported:
                    yield sid, None
                continue
            if self._is_due(record, now_ms):
                yield sid, record

    def _is_due(self, record: Record, now_ms: int) -> bool:
        deadline = record.expires_at()
        return deadline is not None and deadline < now_ms

    def _incarnation(self, record: Record) -> int:
        return record.incarnation

    def _more(self, removed: list[tuple[str, int]]) -> bool:
        return True


class ExpiresAtTheDeadline(ExpiringMinimal):
    """Removes what is due *by* now ("expires_at is the moment it expires"): a session
    read at exactly its timeout is alive (the contract's boundary is strict), and the
    sweep removes it under its reader."""

    def _is_due(self, record: Record, now_ms: int) -> bool:
        deadline = record.expires_at()
        return deadline is not None and deadline <= now_ms


class ExpiresOneBatch(ExpiringMinimal):
    """Runs one step per call ("the sweeper calls again"): ``cleanup_expired()``
    removes one batch and says that was all."""

    def _more(self, removed: list[tuple[str, int]]) -> bool:
        return False


class ExpiresWithTheVersion(ExpiringMinimal):
    """Reports each removed session with its version where its incarnation belongs
    (both are the record's counters): the manager ends the mail of an incarnation
    that never existed, and a consumer blocked on the expired session sleeps on."""

    def _incarnation(self, record: Record) -> int:
        return record.version


class ExpiresDamaged(ExpiringMinimal):
    """Removes what it cannot read along with what is due ("garbage nobody can use"),
    reporting it as damaged: the contract says sweeps leave damaged values alone, for
    their owner to look at or delete."""

    def torpor_expire(self, now_ms: int, batch_size: int) -> Iterator[Expired]:
        for step in super().torpor_expire(now_ms, batch_size):
            with self.lock:
                for key in step.damaged:
                    self.blobs.pop(key, None)  # type: ignore[call-overload]
            yield step


BROKEN: dict[str, str] = {
    "IdleQueryFiltersAfterLimit": "hibernation",
    "ExpiryQueryLimitsBeforeFilter": "expiry",
    "WokenNotReindexed": "hibernation",
    "CountSkipsHibernated": "hibernation",
    "CountsExpiredPending": "expiry",
    "CountsReplacedSessionTwice": "expiry",
    "WakeLeavesColdCopy": "hibernation",
    "IndexOnlyOnCreate": "find",
    "IndexNotRebuiltOnReuse": "find",
    "IndexKeptOnCancel": "find",
    "IndexKeysNumbersAsFloat": "find",
    "IndexDictsByEncoding": "find",
    "BackfillSkipsHibernated": "find",
    "IdleSkipsExpired": "hibernation",
    "MemoryForgetsDeletes": "hibernation",
    "NoTimeoutKeepsDeadline": "expiry",
    "TouchKeepsDeadline": "expiry",
    "ExpiresAtTheDeadline": "expiry",
    "ExpiresOneBatch": "expiry",
    "ExpiresWithTheVersion": "mailbox",
    "ExpiresDamaged": "damaged",
}
"""Each broken backend and the area of the kit that must catch it."""
