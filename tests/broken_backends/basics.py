"""The broken backends of the first review: ids, priority, hibernation touching,
paged walks, lost updates, stale caches, truncation, whole-store batches, expiry
indexes, and claims the kit cannot check."""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from tests.minimal_backend import MinimalBackend
from torpor import EXPIRE, Capability, LocalMailbox, Record, Removal
from torpor.plugins.ets_like import EtsLikeBackend

__all__ = [
    "ClaimsDistributed",
    "ClaimsTransactions",
    "ExpiryIndexMisses",
    "FoldsCase",
    "HibernationTouches",
    "IgnoresPriority",
    "IterationRepeatsOrSkips",
    "LoadsEverythingAtOnce",
    "LosesUpdates",
    "NormalisesIds",
    "ResurrectsFromStaleCache",
    "TruncatesLargeValues",
]


class NormalisesIds(MinimalBackend):
    """Keys ids by their NFC form, "to be helpful"."""

    def torpor_fetch(self, session_id: str) -> bytes | None:
        return super().torpor_fetch(unicodedata.normalize("NFC", session_id))

    def torpor_store(self, record: Record) -> None:
        self.blobs[unicodedata.normalize("NFC", record.id)] = record.blob

    def torpor_delete(self, session_id: str) -> bool:
        return super().torpor_delete(unicodedata.normalize("NFC", session_id))


class FoldsCase(MinimalBackend):
    """Case-insensitive keys, as some key-value stores are."""

    def torpor_fetch(self, session_id: str) -> bytes | None:
        return super().torpor_fetch(session_id.casefold())

    def torpor_store(self, record: Record) -> None:
        self.blobs[record.id.casefold()] = record.blob

    def torpor_delete(self, session_id: str) -> bool:
        return super().torpor_delete(session_id.casefold())


class _FlatMailbox(LocalMailbox):
    def send(self, session_id: str, incarnation: int, message: bytes, priority: bool) -> bool:
        return super().send(session_id, incarnation, message, False)  # one lane for all


class IgnoresPriority(MinimalBackend):
    """Its own mailbox, kept in step with its records, but with a single FIFO lane."""

    def __init__(self) -> None:
        super().__init__()
        self._mail = _FlatMailbox(self._incarnation_of)

    def _incarnation_of(self, session_id: str) -> int | None:
        blob = self.blobs.get(session_id)
        return None if blob is None else Record.from_blob(blob).incarnation

    def torpor_capabilities(self) -> list[Capability]:
        return [Capability.ATOMIC_UPDATE, Capability.SHARED_MAILBOX]

    def torpor_transact(self, session_id: str, fn: Any) -> None:
        with self.lock:
            current = self.blobs.get(session_id)
            change = fn(current)
            if isinstance(change, Removal):
                self.blobs.pop(session_id, None)
                self._mail.end(session_id, None, change)
            elif isinstance(change, Record):
                old = self._incarnation_of(session_id)
                if old is not None and old != change.incarnation:
                    self._mail.end(session_id, old, EXPIRE)
                self.blobs[session_id] = change.blob

    def torpor_mailbox(self) -> LocalMailbox:
        return self._mail


class HibernationTouches(EtsLikeBackend):
    """Stamps last_accessed when it compacts a session."""

    def torpor_open(self, clock: Any) -> None:
        self._clock = clock

    def torpor_store(self, record: Record) -> None:
        if record.hibernated:
            record = record.touched(self._clock())
        super().torpor_store(record)


class IterationRepeatsOrSkips(MinimalBackend):
    """Pages by offset into a sorted snapshot: writers shift the pages under it."""

    def torpor_capabilities(self) -> list[Capability]:
        return [Capability.NATIVE_ITERATION]

    def torpor_iterate(
        self, cursor: Any, batch_size: int
    ) -> tuple[Sequence[tuple[str, bytes]], Any]:
        offset = cursor or 0
        with self.lock:
            keys = sorted(self.blobs)[offset : offset + batch_size]
            batch = [(k, self.blobs[k]) for k in keys]
        return batch, (offset + batch_size if len(keys) == batch_size else None)


class LosesUpdates(MinimalBackend):
    """Claims atomic updates but reads, computes and writes without a lock."""

    def torpor_capabilities(self) -> list[Capability]:
        return [Capability.ATOMIC_UPDATE]

    def torpor_transact(self, session_id: str, fn: Any) -> None:
        current = self.torpor_fetch(session_id)
        change = fn(current)
        if isinstance(change, Record):
            self.torpor_store(change)
        elif change is not None:
            self.torpor_delete(session_id)


class ResurrectsFromStaleCache(MinimalBackend):
    """A read cache that delete forgets to invalidate."""

    def __init__(self) -> None:
        super().__init__()
        self.cache: dict[str, bytes] = {}

    def torpor_fetch(self, session_id: str) -> bytes | None:
        return self.cache.get(session_id) or super().torpor_fetch(session_id)

    def torpor_store(self, record: Record) -> None:
        super().torpor_store(record)
        self.cache[record.id] = record.blob


class TruncatesLargeValues(MinimalBackend):
    """Keeps at most 64 KiB per value, like a column declared too small."""

    def torpor_store(self, record: Record) -> None:
        self.blobs[record.id] = record.blob[:65_536]


class LoadsEverythingAtOnce(EtsLikeBackend):
    """Claims native iteration, then returns the whole store as one batch."""

    def torpor_iterate(
        self, cursor: Any, batch_size: int
    ) -> tuple[Sequence[tuple[str, Record]], Any]:
        with self._lock:
            return [(sid, e.record) for sid, e in self._entries.items()], None


class ExpiryIndexMisses(EtsLikeBackend):
    """An expiry index that is never updated after the first write."""

    def __init__(self) -> None:
        super().__init__()
        self._indexed: set[str] = set()
        self._guard = threading.Lock()

    def torpor_expired_ids(self, now_ms: int, limit: int) -> Sequence[str]:
        found = super().torpor_expired_ids(now_ms, limit)
        return [sid for sid in found if sid not in self._indexed]

    def torpor_store(self, record: Record) -> None:
        with self._guard:
            if record.id in self._entries:
                self._indexed.add(record.id)  # rewritten: "already indexed"
        super().torpor_store(record)


class ClaimsDistributed(EtsLikeBackend):
    """Claims DISTRIBUTED "because the data could be replicated", but keeps its sessions
    in one process's memory (caught by the distributed area)."""

    def torpor_capabilities(self) -> Iterable[Capability]:
        return {*super().torpor_capabilities(), Capability.DISTRIBUTED}


class ClaimsTransactions(MinimalBackend):
    """Claims TRANSACTIONS on the strength of one lock around each write."""

    def torpor_capabilities(self) -> list[Capability]:
        return [Capability.TRANSACTIONS]


BROKEN: dict[str, str] = {
    "NormalisesIds": "ids",
    "FoldsCase": "ids",
    "IgnoresPriority": "mailbox",
    "HibernationTouches": "hibernation",
    "IterationRepeatsOrSkips": "iteration",
    "LosesUpdates": "concurrency",
    "ResurrectsFromStaleCache": "crud",
    "TruncatesLargeValues": "crud",
    "LoadsEverythingAtOnce": "iteration",
    "ExpiryIndexMisses": "expiry",
}
"""Each broken backend and the area of the kit that must catch it."""

REFUSED: dict[str, str] = {
    "ClaimsTransactions": "TRANSACTIONS",
}
"""Broken backends the kit refuses before any test runs, with the claim it refuses."""
