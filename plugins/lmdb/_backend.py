"""The lmdb backend: sessions in an LMDB environment, shared by processes.

Named databases, prefixed by the namespace (default ``torpor``)::

    <ns>.sessions   id -> stored record (the envelope bytes)
    <ns>.meta       id -> last_accessed, expiry time, flags (to keep the indexes exact)
    <ns>.idle       last_accessed (8 bytes, big-endian) + id -> ''   active sessions only
    <ns>.expiry     expiry time (8 bytes, big-endian) + id -> ''     sessions with a timeout
    <ns>.fields     indexed field -> ''                              create_index() calls
    <ns>.index      hash(field) + hash(value) + id -> ''             see _index.py
    <ns>.entries    id -> its index keys, to remove them on rewrite
    <ns>.mail, <ns>.cancels, <ns>.counters                          the mailbox

Big-endian stamps sort by time, so hibernation and expiry read the oldest entries of an
index and stop at the first one past the bound: their cost follows the idle or expired
sessions, not the store.  Keys stay within LMDB's 511-byte limit: an id has at most 255
bytes, an index key 263.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from torpor import DELETE, BackendStats, Capability, Record
from torpor.hookspecs import BatchFn, TransactFn
from torpor.plugins.lmdb._env import Db, SharedEnv, Txn, acquire_env, release_env
from torpor.plugins.lmdb._index import entry_prefix, session_entries
from torpor.plugins.lmdb._mailbox import LmdbMailbox

__all__ = ["LmdbBackend"]

_STAMP = struct.Struct(">Q")
_META = struct.Struct(">QQQB")  # last_accessed, expires_at, version, flags
_HIBERNATED: Final = 1
_EXPIRES: Final = 2
_NAMES: Final = (
    "sessions", "meta", "idle", "expiry", "fields", "index", "entries", "mail", "cancels",
    "counters",
)  # fmt: skip


def _stamp(ms: int) -> bytes:
    return _STAMP.pack(max(ms, 0))


class LmdbBackend:
    """See the module docstring; build it with ``torpor.open("lmdb", path=...)``."""

    name = "lmdb"

    def __init__(
        self,
        path: Path,
        *,
        map_size: int,
        durability: str,
        max_readers: int,
        namespace: str,
        touch_resolution_ms: int,
    ) -> None:
        self._touch_resolution = touch_resolution_ms
        self._shared: SharedEnv | None = acquire_env(
            path, map_size=map_size, durability=durability, max_readers=max_readers, max_dbs=128
        )
        shared = self._shared
        env = shared.env

        def open_all(txn: Txn) -> dict[str, Any]:
            return {n: env.open_db(f"{namespace}.{n}".encode(), txn=txn) for n in _NAMES}

        dbs = shared.write(open_all)
        self._sessions, self._meta = dbs["sessions"], dbs["meta"]
        self._idle, self._expiry = dbs["idle"], dbs["expiry"]
        self._fields, self._index, self._entries = dbs["fields"], dbs["index"], dbs["entries"]
        self._mailbox = LmdbMailbox(shared, dbs["mail"], dbs["cancels"], dbs["counters"])

    @property
    def shared(self) -> SharedEnv:
        if self._shared is None:
            from torpor.errors import ManagerClosed

            raise ManagerClosed("this lmdb backend is closed")
        return self._shared

    # -- lifecycle ---------------------------------------------------------------
    def torpor_capabilities(self) -> Iterable[Capability]:
        return (
            Capability.PERSISTENT,
            Capability.MULTI_PROCESS,
            Capability.ATOMIC_UPDATE,
            Capability.NATIVE_ITERATION,
            Capability.NATIVE_HIBERNATION,
            Capability.NATIVE_EXPIRY,
            Capability.SHARED_MAILBOX,
            Capability.SECONDARY_INDEX,
        )

    def torpor_touch_resolution_ms(self) -> int:
        return self._touch_resolution

    def torpor_close(self, urgent: bool) -> None:
        if self._shared is not None:
            self._mailbox.close()
            release_env(self._shared)
            self._shared = None

    # -- required data hooks ---------------------------------------------------------
    def torpor_fetch(self, session_id: str) -> bytes | None:
        return self.shared.get(session_id.encode("utf-8"), self._sessions)

    def torpor_store(self, record: Record) -> None:
        self.shared.write(lambda txn: self._put(txn, record))

    def torpor_delete(self, session_id: str) -> bool:
        key = session_id.encode("utf-8")
        return self.shared.write(lambda txn: self._remove(txn, key))

    def torpor_ids(self) -> list[str | bytes]:
        def keys(txn: Txn) -> list[str | bytes]:
            return [_decode_key(k) for k in txn.cursor(db=self._sessions).iternext(values=False)]

        return self.shared.read(keys)

    # -- native hooks ----------------------------------------------------------------
    def torpor_transact(self, session_id: str, fn: TransactFn) -> None:
        key = session_id.encode("utf-8")
        self.shared.write(lambda txn: self._apply(txn, key, fn(txn.get(key, db=self._sessions))))

    def torpor_transact_batch(self, session_ids: Sequence[str], fn: BatchFn) -> None:
        def batch(txn: Txn) -> None:
            for sid in session_ids:
                key = sid.encode("utf-8")
                self._apply(txn, key, fn(sid, txn.get(key, db=self._sessions)))

        self.shared.write(batch)

    def torpor_iterate(self, cursor: Any, batch_size: int) -> tuple[Sequence[bytes], Any]:
        def page(txn: Txn) -> tuple[list[bytes], bytes | None]:
            walk = txn.cursor(db=self._sessions)
            if cursor is None:
                more = walk.first()
            else:  # re-seek past the last key seen: no snapshot outlives a batch
                more = walk.set_range(cursor)
                if more and walk.key() == cursor:
                    more = walk.next()
            values: list[bytes] = []
            last = None
            while more and len(values) < batch_size:
                last = walk.key()
                values.append(walk.value())
                more = walk.next()
            return values, (last if more else None)

        return self.shared.read(page)

    def torpor_idle_ids(self, cutoff_ms: int, limit: int) -> Sequence[str]:
        return self._below(self._idle, cutoff_ms, limit)

    def torpor_expired_ids(self, now_ms: int, limit: int) -> Sequence[str]:
        return self._below(self._expiry, now_ms, limit)

    def torpor_count(self) -> int:
        return int(self.shared.read(lambda txn: txn.stat(self._sessions)["entries"]))

    def torpor_stats(self) -> BackendStats:
        def figures(txn: Txn) -> BackendStats:
            sessions = txn.stat(self._sessions)
            active = txn.stat(self._idle)["entries"]
            pages = sessions["branch_pages"] + sessions["leaf_pages"] + sessions["overflow_pages"]
            return BackendStats(
                sessions["entries"], sessions["entries"] - active, pages * sessions["psize"]
            )

        return self.shared.read(figures)

    def torpor_create_index(self, field: str) -> None:
        name = field.encode("utf-8")

        def build(txn: Txn) -> None:
            if txn.get(name, db=self._fields) is not None:
                return
            txn.put(name, b"", db=self._fields)
            for key, blob in list(txn.cursor(db=self._sessions).iternext()):
                data = Record.from_blob(blob).to_session().data
                if field in data:
                    entry = entry_prefix(field, data[field]) + key
                    txn.put(entry, b"", db=self._index)
                    old = txn.get(key, db=self._entries) or b""
                    txn.put(key, _join([*_split(old), entry]), db=self._entries)

        self.shared.write(build)

    def torpor_find(self, criteria: Mapping[str, Any]) -> Sequence[bytes]:
        def lookup(txn: Txn) -> list[bytes]:
            indexed = [
                f for f in criteria if txn.get(f.encode("utf-8"), db=self._fields) is not None
            ]
            if not indexed:  # no index on these fields: a scan, still in one read txn
                return [blob for _, blob in txn.cursor(db=self._sessions).iternext()]
            prefix = entry_prefix(indexed[0], criteria[indexed[0]])
            walk = txn.cursor(db=self._index)
            found: list[bytes] = []
            if walk.set_range(prefix):
                for entry in walk.iternext(values=False):
                    if not entry.startswith(prefix):
                        break
                    blob = txn.get(entry[len(prefix) :], db=self._sessions)
                    if blob is not None:
                        found.append(blob)
            return found

        return self.shared.read(lookup)

    def torpor_mailbox(self) -> LmdbMailbox:
        return self._mailbox

    # -- internals (inside a write transaction) --------------------------------------
    def _below(self, db: Db, bound: int, limit: int) -> list[str]:
        top = _stamp(bound)

        def scan(txn: Txn) -> list[str]:
            found: list[str] = []
            for key in txn.cursor(db=db).iternext(values=False):
                if key[:8] >= top or len(found) >= limit:
                    break
                found.append(key[8:].decode("utf-8"))
            return found

        return self.shared.read(scan)

    def _apply(self, txn: Txn, key: bytes, change: object) -> None:
        if change is None:
            return
        if change is DELETE:
            self._remove(txn, key)
        else:
            assert isinstance(change, Record)
            self._put(txn, change)

    def _put(self, txn: Txn, record: Record) -> None:
        key = record.id.encode("utf-8")
        old = txn.get(key, db=self._meta)
        data_changed = old is None or _META.unpack(old)[2] != record.version
        if old is not None:
            self._unindex(txn, key, old, data_too=data_changed)
        expires = None if record.timeout_ms is None else record.last_accessed + record.timeout_ms
        flags = (_HIBERNATED if record.hibernated else 0) | (_EXPIRES if expires is not None else 0)
        txn.put(key, record.blob, db=self._sessions)
        meta = _META.pack(max(record.last_accessed, 0), max(expires or 0, 0), record.version, flags)
        txn.put(key, meta, db=self._meta)
        if data_changed:  # touches and hibernation keep the data: no decoding for them
            self._index_data(txn, key, record)
        if not record.hibernated:
            txn.put(_stamp(record.last_accessed) + key, b"", db=self._idle)
        if expires is not None:
            txn.put(_stamp(expires) + key, b"", db=self._expiry)

    def _index_data(self, txn: Txn, key: bytes, record: Record) -> None:
        fields = [f.decode("utf-8") for f in txn.cursor(db=self._fields).iternext(values=False)]
        if not fields:
            return
        data = record.data if record.data is not None else record.to_session().data
        entries = session_entries(fields, data, key)
        for entry in entries:
            txn.put(entry, b"", db=self._index)
        if entries:
            txn.put(key, _join(entries), db=self._entries)

    def _remove(self, txn: Txn, key: bytes) -> bool:
        old = txn.get(key, db=self._meta)
        if old is None:
            return False
        self._unindex(txn, key, old, data_too=True)
        txn.delete(key, db=self._meta)
        return bool(txn.delete(key, db=self._sessions))

    def _unindex(self, txn: Txn, key: bytes, meta: bytes, *, data_too: bool) -> None:
        accessed, expires, _version, flags = _META.unpack(meta)
        if data_too:
            entries = txn.get(key, db=self._entries)
            if entries is not None:
                for entry in _split(entries):
                    txn.delete(entry, db=self._index)
                txn.delete(key, db=self._entries)
        if not flags & _HIBERNATED:
            txn.delete(_STAMP.pack(accessed) + key, db=self._idle)
        if flags & _EXPIRES:
            txn.delete(_STAMP.pack(expires) + key, db=self._expiry)


def _join(entries: list[bytes]) -> bytes:
    return b"".join(struct.pack(">H", len(e)) + e for e in entries)


def _split(packed: bytes) -> list[bytes]:
    entries, at = [], 0
    while at < len(packed):
        (size,) = struct.unpack_from(">H", packed, at)
        entries.append(packed[at + 2 : at + 2 + size])
        at += 2 + size
    return entries


def _decode_key(key: bytes) -> str | bytes:
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return key
