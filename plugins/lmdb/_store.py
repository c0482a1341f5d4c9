"""What the lmdb backend does inside a write transaction.

Every change of a session touches several databases (see ``_layout.py``), always in
the one transaction of the hook that makes it, so they can never disagree:

* a **store** writes the record, its metadata, its place in the idle and expiry
  indexes, and (only when the data may have changed: a new version *or* a new
  incarnation) its field index entries.  Touches, wakes and hibernation keep the
  version and the incarnation, so they never decode the data.
* a **touch** (a store that moves only ``last_accessed`` on, over a record its
  metadata vouches for) writes the metadata and the idle and expiry entries, not the
  record: see ``_touch.py``.  The record keeps the time of its last data write; the
  metadata, flagged ``TOUCHED``, holds the newer one, and every read hands the manager
  the record with it (:meth:`Store.value`).
* a **removal** deletes all of that, without decoding the record's data (it may be
  damaged, or a foreign value with no metadata), and ends the incarnation: its mail
  is deleted (a prefix range: what it costs is that session's messages) and, for a
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

Damaged or foreign entries in the auxiliary databases (written by hand, by another
program, or flipped on disk) never break an operation and never leak an engine or
decoding error:

* *metadata* that does not decode, or that names another incarnation than the
  record's envelope, is not trusted: the envelope (decoded without the payload)
  decides, and the metadata is rewritten by the next write that passes by.  A
  damaged metadata entry is never taken for "another incarnation", which would
  discard the session's mail.  Its checksum (``_meta.py``) is written only for a
  record torpor vouches for, so a walk that trusts it never yields a damaged record.
  Metadata whose checksum matches is right by construction, touch and all: neither
  an index entry that only the envelope's older time calls for nor a pending repair
  takes it back.  A touch held in metadata that no longer vouches is dropped, never
  applied to a record that changed behind torpor's back.
* *index entries* (idle, expiry, field index) that are foreign or stale (the session
  is gone or no longer matches them) are skipped by the reads that meet them, logged
  once, and deleted by the next write transaction of the backend (a sweep's own, if
  one follows), after checking again inside it.
* a damaged *mail counter* is recomputed from the mail keys; a foreign *field name*
  or *tombstone* is skipped (and a foreign tombstone deleted by the pruning).
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from torpor import CANCEL, Record
from torpor.errors import ManagerClosed, SerializationError
from torpor.plugins.lmdb._env import Db, Txn
from torpor.plugins.lmdb._index import ENTRY_PREFIX, join, session_entries, split
from torpor.plugins.lmdb._layout import Dbs, field_key
from torpor.plugins.lmdb._meta import (
    EXPIRES,
    HIBERNATED,
    META,
    META_V01,
    State,
    clamp,
    decodes,
    incarnation_bits,
    inflated_size,
    pack,
    parse,
    readable,
    state_of,
    vouches,
)
from torpor.plugins.lmdb._touch import may_be_touch, restamped, touch_entry

__all__ = ["META", "State", "Store", "adopt", "incarnation_bits", "mail_prefix", "stamp"]

log = logging.getLogger("torpor")

_U64 = struct.Struct(">Q")
_MAX: Final = (1 << 64) - 1
_CANCELLED: Final = b"c"
TOMBSTONE_TTL_NS: Final = 60 * 10**9
_MAX_ID: Final = 255  # bytes of a session id
_MAX_KEY: Final = 511  # LMDB's key size limit
_TOMB_MIN: Final = 8 + 1 + 1 + 8  # time + id (1 byte at least) + NUL + incarnation
_CHECK_EVERY: Final = 256  # records between two looks at the closing flag
_MAX_LITTER: Final = 10_000  # foreign or stale entries remembered for deletion


def stamp(ms: int) -> bytes:
    """A time (or any count) as 8 big-endian bytes, clamped to what they hold."""
    return _U64.pack(min(max(ms, 0), _MAX))


def mail_prefix(key: bytes) -> bytes:
    return key + b"\x00"  # ids never contain NUL, so no id's prefix is another's


def _tomb_id(key: bytes, incarnation: int) -> bytes:
    return key + b"\x00" + _U64.pack(incarnation)


def _envelope(key: bytes, blob: bytes | None) -> Record | None:
    """The record's envelope (its payload left encoded), if it is an intact torpor
    record stored under its own id."""
    if blob is None:
        return None
    try:
        record = Record.from_blob(blob)
    except SerializationError:
        return None
    return record if record.id.encode("utf-8", "surrogatepass") == key else None


def _blob_incarnation(key: bytes, blob: bytes | None) -> int | None:
    record = _envelope(key, blob)
    return None if record is None else incarnation_bits(record.incarnation)


def _data(record: Record, limit: int) -> dict[str, Any] | None:
    if record.data is not None:
        return record.data
    try:
        return record.to_session(limit).data
    except SerializationError:
        return None


def _blob_data(key: bytes, blob: bytes, limit: int) -> dict[str, Any] | None:
    record = _envelope(key, blob)
    return None if record is None else _data(record, limit)


def _entry_id(entry: bytes, start: int) -> bytes | None:
    """The id at the end of an index entry, if it can be one (1-255 bytes of UTF-8)."""
    key = entry[start:]
    if not 0 < len(key) <= _MAX_ID:
        return None
    try:
        key.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return key


class _Once:
    """Log each damaged entry once (and at most a thousand of them)."""

    def __init__(self) -> None:
        self._seen: set[object] = set()
        self._lock = threading.Lock()

    def warn(self, key: object, message: str, *args: object) -> None:
        with self._lock:
            if key in self._seen or len(self._seen) >= 1000:
                return
            self._seen.add(key)
        log.warning(message, *args)


class Store:
    """The write-side logic over one namespace's databases."""

    def __init__(self, dbs: Dbs, limit: int) -> None:
        self.dbs = dbs
        self.limit = limit  # max_session_bytes: what a hibernated payload may inflate to
        self.closing = False  # set when the backend closes: long operations stop
        self.once = _Once()
        self._litter_lock = threading.Lock()
        self._litter: dict[tuple[str, bytes], None] = {}  # (database, entry), in order
        self._repairs: dict[bytes, None] = {}  # ids whose metadata needs rewriting

    def check_open(self) -> None:
        """In a long operation, every few hundred records: stop (and abort the
        transaction, so nothing half-done commits) once the backend is closing."""
        if self.closing:
            raise ManagerClosed(
                "the manager was closed while this operation ran; nothing of it was written"
            )

    # -- reading metadata --------------------------------------------------------------
    def _meta(self, txn: Txn, key: bytes, raw: bytes) -> State:
        state = parse(raw)
        if state is not None:
            return state
        if len(raw) == META_V01.size:  # a store adopted from torpor 0.1
            accessed, expires, version, flags = META_V01.unpack(raw)
            blob = txn.get(key, db=self.dbs.sessions)
            return State(accessed, expires, version, flags, _blob_incarnation(key, blob))
        # Damaged metadata: the record's envelope says what it should have said.
        self._damaged_meta(key)
        self._note_repair(key)
        return self.envelope_state(txn, key) or State(0, 0, 0, 0, None)

    def _damaged_meta(self, key: bytes) -> None:
        self.once.warn(
            ("meta", key), "torpor: damaged metadata of session %r in %s; using its record",
            key, self.dbs.name("meta"),
        )  # fmt: skip

    def envelope_state(self, txn: Txn, key: bytes) -> State | None:
        """The state the stored record's envelope gives (None: no intact record)."""
        record = _envelope(key, txn.get(key, db=self.dbs.sessions))
        return None if record is None else state_of(record)

    def value(self, txn: Txn, key: bytes) -> bytes | Record | None:
        """What readers get for ``key``: the stored record, carrying a touch its
        metadata holds and vouches for (``_touch.py``)."""
        blob = txn.get(key, db=self.dbs.sessions)
        return None if blob is None else restamped(key, blob, txn.get(key, db=self.dbs.meta))

    def incarnation(self, txn: Txn, key: bytes) -> int | None:
        """The stored incarnation of ``key`` (as ``incarnation_bits``), None if none."""
        raw = txn.get(key, db=self.dbs.meta)
        if raw is None:
            return _blob_incarnation(key, txn.get(key, db=self.dbs.sessions))
        return self._meta(txn, key, raw).incarnation

    def is_live(self, txn: Txn, key: bytes, wanted: int, *, repair: bool = False) -> bool:
        """Whether incarnation ``wanted`` is the one stored.  The metadata answers when
        it agrees; when it does not (or is damaged), the record's envelope decides, and
        metadata found wrong is rewritten (now if ``repair``: in a write transaction)."""
        raw = txn.get(key, db=self.dbs.meta)
        if raw is not None and readable(raw):
            if self._meta(txn, key, raw).incarnation == wanted:
                return True
        elif raw is not None:
            self._damaged_meta(key)
        state = self.envelope_state(txn, key)
        if state is None or state.incarnation != wanted:
            return False
        if repair:
            self.repair_meta(txn, key)
        else:
            self._note_repair(key)
        return True

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
        stored: State | None
        if old is None:
            blob = txn.get(key, db=dbs.sessions)
            stored = None
            if blob is not None:  # a value without metadata (foreign, or metadata lost)
                found = _envelope(key, blob)
                stored = None if found is None else state_of(found)
                if stored is not None:
                    self._untime(txn, key, stored)
                if stored is None or stored.incarnation != incarnation:
                    self._end(txn, key, None if stored is None else stored.incarnation, "expired")
                    ended = True
        else:
            stored = self._meta(txn, key, old)
            touch = (
                touch_entry(key, txn.get(key, db=dbs.sessions), old, record)
                if may_be_touch(stored, record)
                else None
            )
            if touch is not None:  # only last_accessed moves: the record stays as it is
                self._untime(txn, key, stored)
                txn.put(key, touch[1], db=dbs.meta)
                self._time(txn, key, touch[0])
                return False
            self._untime(txn, key, stored)
            if stored.incarnation != incarnation:
                # Metadata naming another incarnation may itself be wrong: the record's
                # envelope decides whether this is really a new life.
                truth = self.envelope_state(txn, key)
                if truth is not None and truth.incarnation == incarnation:
                    self._untime(txn, key, truth)
                    stored = truth
                else:
                    self._end(txn, key, stored.incarnation, "expired")
                    ended = True
        data_changed = ended or stored is None or stored.version != clamp(record.version)
        if data_changed:
            self._unindex(txn, key)
        # Vouched for (see _meta.py): data the manager encoded, or a touch, wake or
        # hibernation of a record vouched for until now; else decoded here, once per
        # record (those written before checksums, or by another program).
        vouched = data_changed or self._vouched(txn, key, old) or decodes(record, self.limit)
        blob = record.blob
        txn.put(key, blob, db=dbs.sessions)
        state = state_of(record)
        self._write_meta(txn, key, state, blob if vouched else None, inflated_size(record))
        if data_changed:  # touches and hibernation keep the data: no decoding for them
            self._index(txn, key, record)
        return ended

    def remove(self, txn: Txn, key: bytes, reason: str) -> bool:
        """Remove whatever is stored under ``key``, without decoding its data; True if
        something was.  Ends the incarnation for ``reason`` (a ``Removal.reason``)."""
        dbs = self.dbs
        old = txn.get(key, db=dbs.meta)
        intact = old is not None and readable(old)
        # The envelope (never the payload) is read when the metadata cannot tell, or
        # when the incarnation matters (a tombstone): it is the truth if they differ.
        # (Index entries of metadata that is wrong but intact are left for the sweeps,
        # which delete stale entries.)
        truth = None if intact and reason != CANCEL.reason else self.envelope_state(txn, key)
        incarnation = None if truth is None else truth.incarnation
        if old is not None:
            state = self._meta(txn, key, old)
            self._untime(txn, key, state)
            if incarnation is None:
                incarnation = state.incarnation
            txn.delete(key, db=dbs.meta)
        if truth is not None:
            self._untime(txn, key, truth)
        self._unindex(txn, key)
        existed = bool(txn.delete(key, db=dbs.sessions)) or old is not None
        if existed:
            self._end(txn, key, incarnation, reason)
        return existed

    def repair_meta(self, txn: Txn, key: bytes) -> None:
        """Rewrite the metadata (and time index entries) of ``key`` from its record's
        envelope, if they disagree.  With a checksum only if its data decodes: a repair
        must not vouch for a payload no one has read."""
        blob = txn.get(key, db=self.dbs.sessions)
        record = _envelope(key, blob)
        if record is None:
            return
        truth = state_of(record)
        raw = txn.get(key, db=self.dbs.meta)
        if raw is not None and blob is not None and vouches(raw, key, blob):
            return  # written with this record (maybe touched since): it is right
        current = None if raw is None else parse(raw)
        if current == truth:
            return
        if current is not None:
            self._untime(txn, key, current)
        vouched = blob if decodes(record, self.limit) else None
        self._write_meta(txn, key, truth, vouched, inflated_size(record))

    def index_field(self, txn: Txn, field: str) -> None:
        """Start indexing ``field``: file every stored session that has it."""
        dbs = self.dbs
        name = field_key(field)
        if txn.get(name, db=dbs.fields) is not None:
            return
        txn.put(name, field.encode("utf-8", "surrogatepass"), db=dbs.fields)
        for n, (key, blob) in enumerate(txn.cursor(db=dbs.sessions).iternext()):
            if n % _CHECK_EVERY == 0:
                self.check_open()
            data = _blob_data(key, blob, self.limit)
            entries = [] if data is None else session_entries((field,), data, key)
            if entries:
                for entry in entries:
                    txn.put(entry, b"", db=dbs.index)
                old = txn.get(key, db=dbs.entries)
                txn.put(key, join([*split(old or b""), *entries]), db=dbs.entries)

    def indexed_fields(self, txn: Txn) -> list[str]:
        fields = []
        for key, value in txn.cursor(db=self.dbs.fields).iternext():
            try:
                name = value.decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:
                name = None
            if name is None or field_key(name) != key:
                self.once.warn(
                    ("fields", key), "torpor: skipping a foreign entry %r -> %r in %s",
                    key, value[:40], self.dbs.name("fields"),
                )  # fmt: skip
                continue
            fields.append(name)
        return fields

    # -- foreign and stale index entries -------------------------------------------
    def scan_below(self, txn: Txn, which: str, bound: int, limit: int) -> tuple[list[str], bool]:
        """Ids from the ``idle`` or ``expiry`` index with a time below ``bound``, oldest
        first, at most ``limit``; and whether foreign or stale entries were met (they
        are skipped, and deleted by the next write: see :meth:`tidy`)."""
        top = stamp(bound)
        found: list[str] = []
        dirty = False
        for entry in txn.cursor(db=getattr(self.dbs, which)).iternext(values=False):
            if entry[:8] >= top or len(found) >= limit:
                break
            verdict = self._time_entry(txn, which, entry)
            if verdict is None:
                dirty = True
                self._note_litter(which, entry)
            else:
                found.append(verdict)
        return found, dirty

    def index_candidate(
        self, txn: Txn, entry: bytes, prefix_len: int
    ) -> tuple[bytes, bytes | Record] | None:
        """The id a field index entry points to and its stored value, if there is one
        (else the entry is remembered for deletion)."""
        key = _entry_id(entry, prefix_len)
        blob = None if key is None else self.value(txn, key)
        if key is None or blob is None:
            self._note_litter("index", entry)
            return None
        return key, blob

    def pending_tidy(self) -> bool:
        return bool(self._litter or self._repairs)

    def tidy(self, txn: Txn) -> None:
        """In a write transaction: delete the foreign and stale entries reads have met
        (checked again here), and rewrite metadata found wrong."""
        if not (self._litter or self._repairs):
            return
        with self._litter_lock:
            litter, self._litter = self._litter, {}
            repairs, self._repairs = self._repairs, {}
        deleted: dict[str, int] = {}
        for which, entry in litter:
            db: Db = getattr(self.dbs, which)
            if which == "index":
                stale = self._index_entry_stale(txn, entry)
            else:
                stale = self._time_entry(txn, which, entry, note=False) is None
            if stale and txn.delete(entry, db=db):
                deleted[which] = deleted.get(which, 0) + 1
        for key in repairs:
            self.repair_meta(txn, key)
        if deleted:
            log.warning(
                "torpor: deleting %s stale or foreign index entries (pointing to no "
                "session, or not to its current state)",
                ", ".join(f"{n} from {self.dbs.name(which)}" for which, n in deleted.items()),
            )

    def _time_entry(self, txn: Txn, which: str, entry: bytes, *, note: bool = True) -> str | None:
        """The id of an idle or expiry entry that matches its session, else None
        (foreign, or stale).  An entry that matches the record's envelope but not its
        metadata is current: the metadata is what is wrong."""
        key = _entry_id(entry, 8) if len(entry) > 8 else None
        if key is None:
            if note:
                self.once.warn(
                    (which, entry), "torpor: skipping a foreign entry %r in %s",
                    entry[:40], self.dbs.name(which),
                )  # fmt: skip
            return None
        raw = txn.get(key, db=self.dbs.meta)
        intact = raw is not None and readable(raw)
        if intact and _matches(which, entry, self._meta(txn, key, raw)):
            return key.decode("utf-8")
        if raw is not None and self._vouched(txn, key, raw):
            return None  # the metadata vouches for the record (and may hold a later touch)
        truth = self.envelope_state(txn, key)
        if truth is not None and _matches(which, entry, truth):
            if note:
                self._note_repair(key)
            return key.decode("utf-8")
        return None

    def _index_entry_stale(self, txn: Txn, entry: bytes) -> bool:
        key = _entry_id(entry, ENTRY_PREFIX)
        if key is None or txn.get(key, db=self.dbs.sessions) is None:
            return True
        return entry not in split(txn.get(key, db=self.dbs.entries) or b"")

    def _note_litter(self, which: str, entry: bytes) -> None:
        with self._litter_lock:
            if len(self._litter) < _MAX_LITTER:
                self._litter[(which, entry)] = None

    def _note_repair(self, key: bytes) -> None:
        with self._litter_lock:
            if len(self._repairs) < _MAX_LITTER:
                self._repairs[key] = None

    # -- internals -------------------------------------------------------------------
    def _vouched(self, txn: Txn, key: bytes, raw: bytes | None) -> bool:
        """Whether the stored record is one torpor vouched for: metadata ``raw`` has a
        checksum, and the record still matches it."""
        if raw is None or len(raw) != META.size:
            return False
        blob = txn.get(key, db=self.dbs.sessions)
        return blob is not None and vouches(raw, key, blob)

    def _write_meta(
        self, txn: Txn, key: bytes, state: State, vouched_blob: bytes | None, inflated: int
    ) -> None:
        txn.put(key, pack(state, vouched_blob, inflated, key=key), db=self.dbs.meta)
        self._time(txn, key, state)

    def _time(self, txn: Txn, key: bytes, state: State) -> None:
        dbs = self.dbs
        if not state.flags & HIBERNATED:
            txn.put(stamp(state.accessed) + key, b"", db=dbs.idle)
        if state.flags & EXPIRES:
            txn.put(stamp(state.expires) + key, b"", db=dbs.expiry)

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
                if 0 < len(entry) <= _MAX_KEY:  # a damaged list may hold anything
                    txn.delete(entry, db=self.dbs.index)
            txn.delete(key, db=self.dbs.entries)

    def _untime(self, txn: Txn, key: bytes, state: State) -> None:
        if not state.flags & HIBERNATED:
            txn.delete(stamp(state.accessed) + key, db=self.dbs.idle)
        if state.flags & EXPIRES:
            txn.delete(stamp(state.expires) + key, db=self.dbs.expiry)

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
        if previous is not None and len(previous) >= 8:
            txn.delete(previous[:8] + tomb, db=dbs.tombs)
        when = _U64.pack(now)
        txn.put(when + tomb, b"", db=dbs.tombs)
        txn.put(tomb, when + _CANCELLED, db=dbs.tomb_ids)

    def _prune(self, txn: Txn, now: int) -> None:
        """Delete tombstones older than the TTL, oldest first; stop at a young one.
        Foreign entries (too short to be a tombstone) on the way are deleted too."""
        horizon = _U64.pack(max(now - TOMBSTONE_TTL_NS, 0))
        cursor = txn.cursor(db=self.dbs.tombs)
        if not cursor.first():
            return
        while True:
            key = cursor.key()
            if not key or key[:8] >= horizon:
                return
            if len(key) < _TOMB_MIN or len(key) - 8 > _MAX_KEY:
                self.once.warn(
                    ("tombs", key), "torpor: deleting a foreign entry %r in %s",
                    key[:40], self.dbs.name("tombs"),
                )  # fmt: skip
            else:
                found = txn.get(key[8:], db=self.dbs.tomb_ids)
                if found is not None and found[:8] == key[:8]:
                    txn.delete(key[8:], db=self.dbs.tomb_ids)
            if not cursor.delete():
                return


def _matches(which: str, entry: bytes, state: State) -> bool:
    """Whether an idle or expiry entry is the one ``state`` calls for."""
    if which == "idle":
        return not state.flags & HIBERNATED and entry[:8] == stamp(state.accessed)
    return bool(state.flags & EXPIRES) and entry[:8] == stamp(state.expires)


def adopt(txn: Txn, dbs: Dbs, limit: int, check_open: Callable[[], None]) -> None:
    """Bring a torpor 0.1 namespace to this layout's field list and index keys."""
    names: list[str] = []
    for key, value in list(txn.cursor(db=dbs.fields).iternext()):
        try:
            if value:  # already this layout's form: BLAKE2b-16(name) -> name
                names.append(value.decode("utf-8", "surrogatepass"))
                continue
            name = key.decode("utf-8", "surrogatepass")  # 0.1: name -> ''
        except UnicodeDecodeError:
            log.warning("torpor: skipping a foreign entry %r in %s", key[:40], dbs.name("fields"))
            continue
        txn.delete(key, db=dbs.fields)
        txn.put(field_key(name), key, db=dbs.fields)
        names.append(name)
    # 0.1's index keys came from another canonical form: rebuild them all.
    txn.drop(dbs.index, delete=False)
    txn.drop(dbs.entries, delete=False)
    if not names:
        return
    for n, (key, blob) in enumerate(txn.cursor(db=dbs.sessions).iternext()):
        if n % _CHECK_EVERY == 0:
            check_open()
        data = _blob_data(key, blob, limit)
        entries = [] if data is None else session_entries(names, data, key)
        for entry in entries:
            txn.put(entry, b"", db=dbs.index)
        if entries:
            txn.put(key, join(entries), db=dbs.entries)
