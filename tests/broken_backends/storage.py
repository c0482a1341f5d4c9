"""Deliberately broken backends for the storage bug classes of issue 8: state kept per
process (6), durability and atomicity (7), damaged and foreign data (8).  To be merged
into tests/broken_backends/; ``BROKEN`` names the kit area that must catch each.

Each is a small, realistic mistake on top of a working backend: the rest is the real
thing, so it passes every other test of the kit.  The lmdb-based ones are factories
too (``--torpor-backend tests._broken_storage:LmdbReadCache``): they take lmdb's
``path`` option and declare it as storage, like the ``lmdb`` entry point.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.minimal_backend import MinimalBackend
from torpor import Capability, Record, Removal, backend_factory, codec
from torpor.errors import SerializationError
from torpor.hookspecs import BatchFn, TransactFn
from torpor.plugins.lmdb import LmdbBackend
from torpor.plugins.lmdb._backend import CAPABILITIES as LMDB_CAPABILITIES
from torpor.plugins.lmdb._env import EnvConfig, Txn
from torpor.plugins.lmdb._mailbox import LmdbMailbox
from torpor.plugins.lmdb._store import Store

__all__ = [
    "CasSkipsInserts",
    "DeleteDecodesFirst",
    "IdleScanDecodes",
    "LmdbBatchCommitsEachId",
    "LmdbCancelMarkInMemory",
    "LmdbCountsInProcess",
    "LmdbMailSequenceInProcess",
    "LmdbReadCache",
    "LmdbWalkDecodes",
    "LogDefersMetadataWrites",
    "SavesOnlyOnOrderlyClose",
]


@backend_factory(capabilities=LMDB_CAPABILITIES, storage_options={"path": "sessions"})
class _Lmdb(LmdbBackend):
    """The lmdb backend with its default options, built from ``path`` alone."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        config = EnvConfig("sync", 64 << 20, 126, 128)
        super().__init__(Path(path), config, namespace="torpor", touch_resolution_ms=1000)


# -- 6. state kept per process ------------------------------------------------------------
class LmdbReadCache(_Lmdb):
    """A read cache in front of LMDB, kept exact for this process's own writes (each
    write drops the ids it touched), but never told of other processes' writes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self._cache: dict[str, bytes | None] = {}
        self._cache_lock = threading.Lock()
        self._writes = 0  # a read that raced a write must not fill the cache

    def torpor_fetch(self, session_id: str) -> bytes | None:
        with self._cache_lock:
            if session_id in self._cache:
                return self._cache[session_id]
            writes = self._writes
        value = super().torpor_fetch(session_id)
        with self._cache_lock:
            if writes == self._writes:
                self._cache[session_id] = value
        return value

    def _write(self, session_ids: Any, body: Callable[[Txn], Any]) -> Any:
        ids = list(session_ids)
        try:
            return super()._write(ids, body)
        finally:
            with self._cache_lock:
                self._writes += 1
                for sid in ids:
                    self._cache.pop(sid, None)


class LmdbCountsInProcess(_Lmdb):
    """``torpor_count`` from a counter of stored records that this process keeps,
    read from the store at open and moved by its own commits, instead of asking the
    store (expired records are subtracted from the real expiry index)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self._stored = self.shared.read(lambda txn: txn.stat(self._dbs.sessions)["entries"])
        self._count_lock = threading.Lock()
        self._delta = threading.local()

    def torpor_count(self, now_ms: int) -> int:
        expired = self.shared.read(
            lambda txn: len(self._store.scan_below(txn, "expiry", now_ms, 1 << 62)[0])
        )
        with self._count_lock:
            return int(self._stored) - expired

    def _write(self, session_ids: Any, body: Callable[[Txn], Any]) -> Any:
        def counted(txn: Txn) -> Any:
            self._delta.value = 0  # a retried transaction counts afresh
            return body(txn)

        result = super()._write(session_ids, counted)
        with self._count_lock:
            self._stored += getattr(self._delta, "value", 0)
        self._delta.value = 0
        return result

    def _apply(self, txn: Txn, key: bytes, change: object) -> None:
        existed = txn.get(key, db=self._dbs.sessions) is not None
        super()._apply(txn, key, change)
        exists = txn.get(key, db=self._dbs.sessions) is not None
        self._delta.value = getattr(self._delta, "value", 0) + exists - existed


class _CancelMarksInMemory(Store):
    marks: set[tuple[bytes, int]]

    def _tombstone(self, txn: Txn, key: bytes, incarnation: int) -> None:
        self.marks.add((key, incarnation))

    def cancelled(self, txn: Txn, key: bytes, incarnation: int) -> bool:
        return (key, incarnation) in self.marks


class LmdbCancelMarkInMemory(_Lmdb):
    """Remembers cancelled sessions in a set in process memory instead of a tombstone
    in the environment: its own receivers raise ``SessionCancelled``, a receiver in
    another process finds the session gone with no reason and raises
    ``SessionNotFound``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self._store.__class__ = _CancelMarksInMemory  # the store is built by lmdb's __init__
        assert isinstance(self._store, _CancelMarksInMemory)
        self._store.marks = set()


class _SequenceInProcess(LmdbMailbox):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._seq: int | None = None
        self._seq_lock = threading.Lock()

    def _next_seq(self, txn: Txn) -> int:
        with self._seq_lock:
            self._seq = super()._next_seq(txn) if self._seq is None else self._seq + 1
            return self._seq


class LmdbMailSequenceInProcess(_Lmdb):
    """Numbers mail from a counter in process memory (read from the environment at
    the first send, and still written back), saving a read per send: two processes
    then hand out the same numbers, and a message overwrites another's."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self._mailbox = _SequenceInProcess(self.shared, self._store)


# -- 7. durability and atomicity ----------------------------------------------------------
@backend_factory(capabilities={Capability.PERSISTENT}, storage_options={"path": "sessions"})
class SavesOnlyOnOrderlyClose(MinimalBackend):
    """Persistent by saving the whole store to one file when it closes; an urgent
    close skips the save to return in time, and loses every write since the last
    orderly close."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.file = folder / "store.msgpack"
        if self.file.exists():
            for key, blob in codec.decode_value(self.file.read_bytes()):
                self.blobs[key] = blob

    def torpor_capabilities(self) -> list[Capability]:
        return [Capability.PERSISTENT]

    def torpor_close(self, urgent: bool) -> None:
        if urgent:
            return
        with self.lock:
            saved = codec.encode_value([[key, blob] for key, blob in self.blobs.items()])
        self.file.write_bytes(saved)


@backend_factory(capabilities={Capability.PERSISTENT}, storage_options={"path": "sessions"})
class LogDefersMetadataWrites(MinimalBackend):
    """An append-only log, flushed and fsynced at each write of data (a create, a
    new version, a removal).  Writes that change no data (a touch, ``set_timeout``,
    hibernation, a wake) are "cheap to lose", so they wait in memory for the next
    data write or an orderly close; an urgent close drops them, acknowledged or not."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.file = folder / "log.bin"
        if self.file.exists():
            self._replay(self.file.read_bytes())
        self.log = self.file.open("ab")
        self.deferred: list[tuple[str, bytes | None]] = []

    def _replay(self, data: bytes) -> None:
        position = 0
        while position + 4 <= len(data):
            size = int.from_bytes(data[position : position + 4], "big")
            key, blob = codec.decode_value(data[position + 4 : position + 4 + size])
            position += 4 + size
            if blob is None:
                self.blobs.pop(key, None)
            else:
                self.blobs[key] = blob

    def torpor_capabilities(self) -> list[Capability]:
        return [Capability.PERSISTENT]

    def torpor_store(self, record: Record) -> None:
        blob = record.blob
        with self.lock:
            old = self.blobs.get(record.id)
            self.blobs[record.id] = blob
            if old is not None and _same_data(old, record):
                self.deferred.append((record.id, blob))
            else:
                self._append((record.id, blob))

    def torpor_delete(self, session_id: str) -> bool:
        with self.lock:
            existed = self.blobs.pop(session_id, None) is not None
            self._append((session_id, None))
            return existed

    def torpor_close(self, urgent: bool) -> None:
        with self.lock:
            if not urgent and self.deferred:
                self._append()
            self.log.close()

    def _append(self, *entries: tuple[str, bytes | None]) -> None:
        """Write the deferred entries, then ``entries``, and sync (lock held)."""
        for key, blob in [*self.deferred, *entries]:
            frame = codec.encode_value([key, blob])
            self.log.write(len(frame).to_bytes(4, "big") + frame)
        self.deferred.clear()
        self.log.flush()
        os.fsync(self.log.fileno())


def _same_data(blob: bytes, record: Record) -> bool:
    """Whether ``record`` is the stored ``blob``'s session with the same data."""
    try:
        before = Record.from_blob(blob)
    except SerializationError:
        return False
    return (before.incarnation, before.version) == (record.incarnation, record.version)


class LmdbBatchCommitsEachId(_Lmdb):
    """Implements ``torpor_transact_batch`` as a loop of ``torpor_transact``: one
    commit per session, so a batch that ``fn`` interrupts stays half applied while
    the manager, told the batch was aborted, counts none of it."""

    def torpor_transact_batch(self, session_ids: Sequence[str], fn: BatchFn) -> None:
        for sid in session_ids:
            self.torpor_transact(sid, functools.partial(fn, sid))


class CasSkipsInserts(MinimalBackend):
    """Optimistic transactions: compute outside the lock, then compare-and-swap
    against the value read, retrying on a conflict.  But when nothing was stored it
    writes without checking that nothing is stored now, so two racing creates of one
    id both succeed."""

    def torpor_capabilities(self) -> list[Capability]:
        return [Capability.ATOMIC_UPDATE]

    def torpor_transact(self, session_id: str, fn: TransactFn) -> None:
        while True:
            current = self.blobs.get(session_id)
            change = fn(current)
            with self.lock:
                if current is not None and self.blobs.get(session_id) is not current:
                    continue  # another writer won: read again
                if isinstance(change, Record):
                    self.blobs[session_id] = change.blob
                elif isinstance(change, Removal):
                    self.blobs.pop(session_id, None)
                return


# -- 8. damaged and foreign data ----------------------------------------------------------
class LmdbWalkDecodes(_Lmdb):
    """Its walk hands back decoded records (the hook allows a ``Record`` for a value,
    and it saves the manager a decode), so one value that does not decode makes
    ``ids()``, ``len()`` and every sweep raise."""

    def torpor_iterate(self, cursor: Any, batch_size: int) -> tuple[list[Any], Any]:
        items, after = super().torpor_iterate(cursor, batch_size)
        return [(key, Record.from_blob(value)) for key, value in items], after


class IdleScanDecodes(MinimalBackend):
    """Finds idle and expired sessions by decoding each stored envelope (a scan in
    place of an index); a value that does not decode raises out of the sweep."""

    def torpor_capabilities(self) -> list[Capability]:
        return [Capability.NATIVE_HIBERNATION, Capability.NATIVE_EXPIRY]

    def _records(self) -> list[Record]:
        with self.lock:
            blobs = list(self.blobs.values())
        return [Record.from_blob(blob) for blob in blobs]

    def torpor_idle_ids(self, cutoff_ms: int, limit: int) -> list[str]:
        idle = sorted(
            (r.last_accessed, r.id)
            for r in self._records()
            if not r.hibernated and r.last_accessed < cutoff_ms
        )
        return [sid for _, sid in idle[:limit]]

    def torpor_expired_ids(self, now_ms: int, limit: int) -> list[str]:
        return [r.id for r in self._records() if r.is_expired(now_ms)][:limit]


class DeleteDecodesFirst(MinimalBackend):
    """An expiry index that files only sessions with a timeout; ``torpor_delete``
    decodes the stored record to learn whether it was filed, so a damaged or foreign
    value can never be deleted."""

    def __init__(self) -> None:
        super().__init__()
        self.expiry: dict[str, int] = {}

    def torpor_capabilities(self) -> list[Capability]:
        return [Capability.NATIVE_EXPIRY]

    def torpor_store(self, record: Record) -> None:
        blob = record.blob
        with self.lock:
            self.blobs[record.id] = blob
            if record.timeout_ms is None:
                self.expiry.pop(record.id, None)
            else:
                self.expiry[record.id] = record.last_accessed + record.timeout_ms

    def torpor_delete(self, session_id: str) -> bool:
        with self.lock:
            blob = self.blobs.get(session_id)
            if blob is None:
                return False
            if Record.from_blob(blob).timeout_ms is not None:
                self.expiry.pop(session_id, None)
            del self.blobs[session_id]
            return True

    def torpor_expired_ids(self, now_ms: int, limit: int) -> list[str]:
        with self.lock:
            due = sorted((at, sid) for sid, at in self.expiry.items() if at < now_ms)
        return [sid for _, sid in due[:limit]]


BROKEN: dict[str, str] = {
    "LmdbReadCache": "multiprocess",
    "LmdbCountsInProcess": "multiprocess",
    "LmdbCancelMarkInMemory": "multiprocess",
    "LmdbMailSequenceInProcess": "multiprocess",
    "SavesOnlyOnOrderlyClose": "persistence",
    "LogDefersMetadataWrites": "persistence",
    "LmdbBatchCommitsEachId": "concurrency",
    "CasSkipsInserts": "concurrency",
    "LmdbWalkDecodes": "damaged",
    "IdleScanDecodes": "damaged",
    "DeleteDecodesFirst": "damaged",
}
"""Each broken backend and the area of the kit that must catch it."""
