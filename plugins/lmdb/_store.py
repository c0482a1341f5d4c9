"""What the lmdb backend does inside a write transaction.

Every change of a session touches several databases (see ``_layout.py``), always in
the one transaction of the hook that makes it, so they can never disagree:

* a **store** writes the record, its metadata, its place in the idle and expiry
  indexes, and (only when the data may have changed: a new version *or* a new
  incarnation) its field index entries.  Touches, wakes and hibernation keep the
  version and the incarnation, so they never decode the data.
* a **removal** deletes all of that, without decoding the record (it may be damaged,
  or a foreign value with no metadata), and ends the incarnation: its mail is
  deleted (a prefix range: what it costs is that session's messages) and, for a
  cancellation, a tombstone tells receivers blocked on that incarnation, in any
  process, to raise ``SessionCancelled``.
* a store of a *different incarnation* over a stored record (``create`` over an
  expired, unswept session) ends the old incarnation first, as an expiry.

Tombstones are kept for a minute, keyed by time as well as by session, and each
cancellation prunes the expired ones from the old end of the time-keyed database,
stopping at the first young one: each tombstone is deleted once, so pruning costs
O(1) per cancellation, amortised, and never a scan of the others.  Removals that are
not cancellations need none: a receiver that finds its incarnation gone and no
tombstone raises ``SessionNotFound``.
"""

from __future__ import annotations

import struct
import time
from typing import Any, Final

from torpor import CANCEL, Record
from torpor.errors import SerializationError
from torpor.plugins.lmdb._env import Txn
from torpor.plugins.lmdb._index import join, session_entries, split
from torpor.plugins.lmdb._layout import Dbs, field_key

__all__ = ["META", "Store", "adopt", "mail_prefix", "stamp"]

META = struct.Struct(">QQQBQ")  # last_accessed, expires_at, version, flags, incarnation
_META_V01 = struct.Struct(">QQQB")  # torpor 0.1: no incarnation
_U64 = struct.Struct(">Q")
_MAX: Final = (1 << 64) - 1
_HIBERNATED: Final = 1
_EXPIRES: Final = 2
_CANCELLED: Final = b"c"
TOMBSTONE_TTL_NS: Final = 60 * 10**9


def stamp(ms: int) -> bytes:
    """A time (or any count) as 8 big-endian bytes, clamped to what they hold."""
    return _U64.pack(min(max(ms, 0), _MAX))


def incarnation_bits(incarnation: int) -> int:
    # torpor draws 63 bits; a 0.1 record's incarnation is its created_at.  Either fits.
    return incarnation & _MAX


def mail_prefix(key: bytes) -> bytes:
    return key + b"\x00"  # ids never contain NUL, so no id's prefix is another's


def _tomb_id(key: bytes, incarnation: int) -> bytes:
    return key + b"\x00" + _U64.pack(incarnation)


def _blob_incarnation(blob: bytes | None) -> int | None:
    if blob is None:
        return None
    try:
        return incarnation_bits(Record.from_blob(blob).incarnation)
    except SerializationError:
        return None  # damaged or foreign: no receiver can be waiting on it


def _data(record: Record, limit: int) -> dict[str, Any] | None:
    if record.data is not None:
        return record.data
    try:
        return record.to_session(limit).data
    except SerializationError:
        return None


def _blob_data(key: bytes, blob: bytes, limit: int) -> dict[str, Any] | None:
    try:
        record = Record.from_blob(blob)
    except SerializationError:
        return None
    return _data(record, limit) if record.id.encode("utf-8") == key else None


class Store:
    """The write-side logic over one namespace's databases."""

    def __init__(self, dbs: Dbs, limit: int) -> None:
        self.dbs = dbs
        self.limit = limit  # max_session_bytes: what a hibernated payload may inflate to

    # -- reading metadata --------------------------------------------------------------
    def _meta(self, txn: Txn, key: bytes, raw: bytes) -> tuple[int, int, int, int, int | None]:
        if len(raw) == META.size:
            accessed, expires, version, flags, incarnation = META.unpack(raw)
            return accessed, expires, version, flags, incarnation
        if len(raw) == _META_V01.size:  # a store adopted from torpor 0.1
            accessed, expires, version, flags = _META_V01.unpack(raw)
            blob = txn.get(key, db=self.dbs.sessions)
            return accessed, expires, version, flags, _blob_incarnation(blob)
        return 0, 0, 0, 0, None  # damaged metadata: nothing to unindex by time

    def incarnation(self, txn: Txn, key: bytes) -> int | None:
        """The stored incarnation of ``key`` (as ``incarnation_bits``), None if none."""
        raw = txn.get(key, db=self.dbs.meta)
        if raw is None:
            return _blob_incarnation(txn.get(key, db=self.dbs.sessions))
        return self._meta(txn, key, raw)[4]

    def cancelled(self, txn: Txn, key: bytes, incarnation: int) -> bool:
        """Whether that incarnation was cancelled (in the last minute)."""
        found = txn.get(_tomb_id(key, incarnation), db=self.dbs.tomb_ids)
        return found is not None and found[8:9] == _CANCELLED

    # -- writes ----------------------------------------------------------------------
    def put(self, txn: Txn, record: Record) -> bool:
        """Store ``record``; True if it replaced another incarnation (which ended)."""
        dbs = self.dbs
        key = record.id.encode("utf-8")
        incarnation = incarnation_bits(record.incarnation)
        old = txn.get(key, db=dbs.meta)
        ended = False
        if old is None:
            data_changed = True
            blob = txn.get(key, db=dbs.sessions)
            if blob is not None:  # a value without metadata (foreign, or written by hand)
                self._end(txn, key, _blob_incarnation(blob), "expired")
                ended = True
        else:
            accessed, expires, version, flags, stored = self._meta(txn, key, old)
            self._untime(txn, key, accessed, expires, flags)
            if stored != incarnation:
                self._end(txn, key, stored, "expired")
                ended = True
            data_changed = ended or version != min(record.version, _MAX)
        if data_changed:
            self._unindex(txn, key)
        expiry = None if record.timeout_ms is None else record.last_accessed + record.timeout_ms
        kind = (_HIBERNATED if record.hibernated else 0) | (_EXPIRES if expiry is not None else 0)
        txn.put(key, record.blob, db=dbs.sessions)
        meta = (stamp(record.last_accessed), stamp(expiry or 0), stamp(record.version))
        txn.put(key, b"".join(meta) + bytes((kind,)) + _U64.pack(incarnation), db=dbs.meta)
        if data_changed:  # touches and hibernation keep the data: no decoding for them
            self._index(txn, key, record)
        if not record.hibernated:
            txn.put(stamp(record.last_accessed) + key, b"", db=dbs.idle)
        if expiry is not None:
            txn.put(stamp(expiry) + key, b"", db=dbs.expiry)
        return ended

    def remove(self, txn: Txn, key: bytes, reason: str) -> bool:
        """Remove whatever is stored under ``key``, without decoding it; True if
        something was.  Ends the incarnation for ``reason`` (a ``Removal.reason``)."""
        dbs = self.dbs
        old = txn.get(key, db=dbs.meta)
        incarnation: int | None = None
        if old is not None:
            accessed, expires, _version, flags, incarnation = self._meta(txn, key, old)
            self._untime(txn, key, accessed, expires, flags)
            txn.delete(key, db=dbs.meta)
        elif reason == CANCEL.reason:  # no metadata: only a tombstone needs the incarnation
            incarnation = _blob_incarnation(txn.get(key, db=dbs.sessions))
        self._unindex(txn, key)
        existed = bool(txn.delete(key, db=dbs.sessions)) or old is not None
        if existed:
            self._end(txn, key, incarnation, reason)
        return existed

    def index_field(self, txn: Txn, field: str) -> None:
        """Start indexing ``field``: file every stored session that has it."""
        dbs = self.dbs
        name = field_key(field)
        if txn.get(name, db=dbs.fields) is not None:
            return
        txn.put(name, field.encode("utf-8", "surrogatepass"), db=dbs.fields)
        for key, blob in txn.cursor(db=dbs.sessions).iternext():
            data = _blob_data(key, blob, self.limit)
            entries = [] if data is None else session_entries((field,), data, key)
            if entries:
                for entry in entries:
                    txn.put(entry, b"", db=dbs.index)
                old = txn.get(key, db=dbs.entries)
                txn.put(key, join([*split(old or b""), *entries]), db=dbs.entries)

    def indexed_fields(self, txn: Txn) -> list[str]:
        return [
            name.decode("utf-8", "surrogatepass")
            for name in txn.cursor(db=self.dbs.fields).iternext(keys=False)
        ]

    # -- internals -------------------------------------------------------------------
    def _index(self, txn: Txn, key: bytes, record: Record) -> None:
        fields = self.indexed_fields(txn)
        if not fields:
            return
        data = _data(record, self.limit)
        entries = [] if data is None else session_entries(fields, data, key)
        for entry in entries:
            txn.put(entry, b"", db=self.dbs.index)
        if entries:
            txn.put(key, join(entries), db=self.dbs.entries)

    def _unindex(self, txn: Txn, key: bytes) -> None:
        packed = txn.get(key, db=self.dbs.entries)
        if packed is not None:
            for entry in split(packed):
                txn.delete(entry, db=self.dbs.index)
            txn.delete(key, db=self.dbs.entries)

    def _untime(self, txn: Txn, key: bytes, accessed: int, expires: int, flags: int) -> None:
        if not flags & _HIBERNATED:
            txn.delete(_U64.pack(accessed) + key, db=self.dbs.idle)
        if flags & _EXPIRES:
            txn.delete(_U64.pack(expires) + key, db=self.dbs.expiry)

    def _end(self, txn: Txn, key: bytes, incarnation: int | None, reason: str) -> None:
        """The incarnation ended: its mail goes; a cancellation leaves a tombstone."""
        prefix = mail_prefix(key)
        cursor = txn.cursor(db=self.dbs.mail)
        if cursor.set_range(prefix):
            while cursor.key().startswith(prefix):
                if not cursor.delete():  # moves to the next entry
                    break
        if reason == CANCEL.reason and incarnation is not None:
            self._tombstone(txn, key, incarnation)

    def _tombstone(self, txn: Txn, key: bytes, incarnation: int) -> None:
        dbs = self.dbs
        now = time.time_ns()
        self._prune(txn, now)
        tomb = _tomb_id(key, incarnation)
        previous = txn.get(tomb, db=dbs.tomb_ids)
        if previous is not None:
            txn.delete(previous[:8] + tomb, db=dbs.tombs)
        when = _U64.pack(now)
        txn.put(when + tomb, b"", db=dbs.tombs)
        txn.put(tomb, when + _CANCELLED, db=dbs.tomb_ids)

    def _prune(self, txn: Txn, now: int) -> None:
        """Delete tombstones older than the TTL, oldest first; stop at a young one."""
        horizon = _U64.pack(max(now - TOMBSTONE_TTL_NS, 0))
        cursor = txn.cursor(db=self.dbs.tombs)
        if not cursor.first():
            return
        while True:
            key = cursor.key()
            if not key or key[:8] >= horizon:
                return
            found = txn.get(key[8:], db=self.dbs.tomb_ids)
            if found is not None and found[:8] == key[:8]:
                txn.delete(key[8:], db=self.dbs.tomb_ids)
            if not cursor.delete():
                return


def adopt(txn: Txn, dbs: Dbs, limit: int) -> None:
    """Bring a torpor 0.1 namespace to this layout's field list and index keys."""
    names: list[str] = []
    for key, value in list(txn.cursor(db=dbs.fields).iternext()):
        if value:  # already this layout's form: BLAKE2b-16(name) -> name
            names.append(value.decode("utf-8", "surrogatepass"))
            continue
        name = key.decode("utf-8", "surrogatepass")  # 0.1: name -> ''
        txn.delete(key, db=dbs.fields)
        txn.put(field_key(name), key, db=dbs.fields)
        names.append(name)
    # 0.1's index keys came from another canonical form: rebuild them all.
    txn.drop(dbs.index, delete=False)
    txn.drop(dbs.entries, delete=False)
    if not names:
        return
    for key, blob in txn.cursor(db=dbs.sessions).iternext():
        data = _blob_data(key, blob, limit)
        entries = [] if data is None else session_entries(names, data, key)
        for entry in entries:
            txn.put(entry, b"", db=dbs.index)
        if entries:
            txn.put(key, join(entries), db=dbs.entries)
