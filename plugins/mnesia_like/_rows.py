"""What a write does to the rows of one session, and the proof that lets a walk or a
sweep trust a row without decoding it.

Every change of a session is made inside the one transaction of the hook (or of the
multi-session transaction) that makes it:

* a **store** writes the record's blob and its metadata columns in one row (so the
  idle and expiry indexes, partial indexes on those columns, follow in the same
  statement), and only when the data may have changed (a new version or
  incarnation) its secondary-index entries.  A store of *another incarnation* over
  the stored one (``create`` over an expired session) ends the old one's mail, as an
  expiry would.
* a **removal** deletes the row (a trigger deletes its mail and index entries with
  it: cleaning up costs what that session's own rows cost) and, for a cancellation,
  leaves a tombstone, keyed by time, that receivers blocked on that incarnation in any
  process find (``SessionCancelled``); no tombstone means ``SessionNotFound``.

The proof
=========

``proof`` is a CRC-32 of the id, the blob and the metadata columns, written only for
a record torpor *vouches* for: one whose data the manager encoded (a new version or
incarnation, or data it holds), one derived (a touch, hibernation, wake) from a row
proved until now, or one whose data decodes here.  A row that matches its proof is
intact, and its columns say when it expires: the ids walk (``torpor_iterate_ids``)
and the native sweep (``torpor_expire``) read neither its envelope nor its payload.
A row another program wrote (no metadata), one whose blob or columns changed behind
torpor's back, and one without a proof are decoded by the walk as the manager would,
and never removed by the sweep (reported as damaged instead).  (A change that keeps
a 32-bit CRC is the one case this misses: one in four billion.)

``inflated`` is what a hibernated payload inflates to: a manager whose
``max_session_bytes`` is below it must treat the record as damaged, so the walk
decodes such a row.
"""

from __future__ import annotations

import sqlite3
import struct
import time
import zlib
from collections.abc import Sequence
from contextlib import suppress
from typing import Final, NamedTuple

from torpor import CANCEL, Record, codec
from torpor.errors import SerializationError
from torpor.indexing import index_entry

__all__ = [
    "COLUMNS",
    "Row",
    "Rows",
    "cancelled",
    "i64",
    "key_of",
    "live_in_walk",
    "proved",
]

_I64_MAX: Final = (1 << 63) - 1
_I64_MIN: Final = -(1 << 63)
_HEAD = struct.Struct(">qqqqqq")
_UNKNOWN_SIZE: Final = _I64_MAX  # a frame that does not say: always decode to tell
TOMBSTONE_TTL_NS: Final = 60 * 10**9
COLUMNS: Final = (
    "rowid, id, blob, last_accessed, hibernated, deadline, incarnation, version, inflated, proof"
)
_SELECT_ROW: Final = f"SELECT {COLUMNS} FROM torpor_sessions WHERE id = ?"  # noqa: S608


class Row(NamedTuple):
    """A row of ``torpor_sessions`` (``COLUMNS``)."""

    rowid: int
    id: bytes
    blob: bytes
    accessed: int | None
    hibernated: int | None
    deadline: int | None
    incarnation: int | None
    version: int | None
    inflated: int | None
    proof: int | None


def i64(value: int) -> int:
    """``value`` within SQLite's signed 64-bit integers."""
    return min(max(value, _I64_MIN), _I64_MAX)


def key_of(key: bytes) -> str | bytes:
    """A stored key as the hooks give it: text if UTF-8, else the bytes."""
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return key


def _proof(
    key: bytes,
    blob: bytes,
    accessed: int,
    hibernated: int,
    deadline: int | None,
    incarnation: int,
    version: int,
    inflated: int,
) -> int:
    head = _HEAD.pack(
        accessed, hibernated, -1 if deadline is None else deadline, incarnation, version, inflated
    )
    return zlib.crc32(head, zlib.crc32(blob, zlib.crc32(key)))


def proved(row: Row) -> bool:
    """Whether the row carries a proof that it still matches (see the docstring)."""
    if row.proof is None or None in (
        row.accessed,
        row.hibernated,
        row.incarnation,
        row.version,
        row.inflated,
    ):
        return False
    return row.proof == _proof(
        row.id,
        row.blob,
        row.accessed,  # type: ignore[arg-type]
        row.hibernated,  # type: ignore[arg-type]
        row.deadline,
        row.incarnation,  # type: ignore[arg-type]
        row.version,  # type: ignore[arg-type]
        row.inflated,  # type: ignore[arg-type]
    )


def _inflated(record: Record) -> int:
    if not record.hibernated or record.payload is None:
        return 0
    size = codec.compressed_saving(record.payload) + len(record.payload)
    return size if size > 0 else _UNKNOWN_SIZE


def _decodes(record: Record, limit: int) -> bool:
    try:
        record.session_data(limit)
    except SerializationError:
        return False
    return True


def _envelope(key: bytes, blob: bytes) -> Record | None:
    try:
        record = Record.from_blob(blob)
    except SerializationError:
        return None
    return record if record.id.encode("utf-8", "surrogatepass") == key else None


def live_in_walk(row: Row, now_ms: int, limit: int) -> bool:
    """Whether ``ids()`` keeps the row at ``now_ms``: intact and not expired.  A proved
    row says it in its columns; any other is decoded as the manager would."""
    if proved(row):
        inflated = row.inflated or 0
        if not row.hibernated or 0 < inflated <= limit:
            return row.deadline is None or now_ms <= row.deadline
    try:
        record = Record.of(row.blob, row.id.decode("utf-8"))
        record.session_data(limit)
    except (SerializationError, UnicodeDecodeError):
        return False
    return not record.is_expired(now_ms)


def cancelled(conn: sqlite3.Connection, key: bytes, incarnation: int) -> bool:
    """Whether that incarnation was cancelled (in the last minute)."""
    found = conn.execute(
        "SELECT 1 FROM torpor_tombs WHERE session = ? AND incarnation = ?", (key, i64(incarnation))
    ).fetchone()
    return found is not None


class Rows:
    """The write side over one database's tables (see the module docstring)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit  # max_session_bytes: what a hibernated payload may inflate to

    @staticmethod
    def row(conn: sqlite3.Connection, key: bytes) -> Row | None:
        found = conn.execute(_SELECT_ROW, (key,)).fetchone()
        return None if found is None else Row(*found)

    def put(self, conn: sqlite3.Connection, record: Record, old: Row | None) -> None:
        """Store ``record`` over ``old`` (the row as read in this transaction)."""
        key = record.id.encode("utf-8")
        incarnation, version = i64(record.incarnation), i64(record.version)
        stored_version, stored_incarnation = _stored(key, old)
        ended = old is not None and stored_incarnation != incarnation
        data_changed = old is None or ended or stored_version != version
        vouched = (
            record.data is not None
            or data_changed
            or (old is not None and proved(old))
            or _decodes(record, self.limit)
        )
        blob = record.blob
        accessed = i64(record.last_accessed)
        hibernated = int(record.hibernated)
        expires = record.expires_at()
        deadline = None if expires is None else i64(expires)
        inflated = _inflated(record)
        proof = (
            _proof(key, blob, accessed, hibernated, deadline, incarnation, version, inflated)
            if vouched
            else None
        )
        values = (blob, accessed, hibernated, deadline, incarnation, version, inflated, proof)
        if old is None:
            rowid = conn.execute(
                "INSERT INTO torpor_sessions(id, blob, last_accessed, hibernated, deadline, "
                "incarnation, version, inflated, proof) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "RETURNING rowid",
                (key, *values),
            ).fetchone()[0]
        else:
            rowid = old.rowid
            conn.execute(
                "UPDATE torpor_sessions SET blob = ?, last_accessed = ?, hibernated = ?, "
                "deadline = ?, incarnation = ?, version = ?, inflated = ?, proof = ? "
                "WHERE rowid = ?",
                (*values, rowid),
            )
        if ended:  # the old incarnation's mail ends, as an expiry's would
            conn.execute("DELETE FROM torpor_mail WHERE session = ?", (rowid,))
        if data_changed:
            self._index(conn, rowid, record, old is not None)

    def remove(self, conn: sqlite3.Connection, key: bytes, reason: str) -> bool:
        """Remove whatever is stored under ``key`` without decoding it; True if
        something was.  A cancellation leaves a tombstone (see the docstring)."""
        found = conn.execute(
            "DELETE FROM torpor_sessions WHERE id = ? RETURNING incarnation", (key,)
        ).fetchone()
        if found is None:
            return False
        if reason == CANCEL.reason and found[0] is not None:
            now = time.time_ns()
            conn.execute("DELETE FROM torpor_tombs WHERE at < ?", (now - TOMBSTONE_TTL_NS,))
            conn.execute(
                "INSERT OR REPLACE INTO torpor_tombs(session, incarnation, at) VALUES (?, ?, ?)",
                (key, found[0], now),
            )
        return True

    # -- the secondary index -----------------------------------------------------------
    @staticmethod
    def fields(conn: sqlite3.Connection) -> list[str]:
        """Every indexed field, ready or being backfilled (writers file both)."""
        return [name for (name,) in conn.execute("SELECT name FROM torpor_fields")]

    def entries(self, record: Record, fields: Sequence[str]) -> list[tuple[str, bytes]]:
        """``(field, entry)`` for each indexed field the record's data holds."""
        if not fields:
            return []
        try:
            data = record.data if record.data is not None else record.session_data(self.limit)
        except SerializationError:
            return []  # damaged data: not findable (the manager counts it)
        found = []
        for field in fields:
            if field in data:
                with suppress(TypeError, ValueError):  # no session holds it: not findable
                    found.append((field, index_entry(field, data[field])))
        return found

    def _index(self, conn: sqlite3.Connection, rowid: int, record: Record, existed: bool) -> None:
        fields = self.fields(conn)
        if not fields:
            return  # no field was ever indexed (they are never dropped): no entries
        if existed:
            conn.execute("DELETE FROM torpor_entries WHERE session = ?", (rowid,))
        entries = self.entries(record, fields)
        if entries:
            conn.executemany(
                "INSERT OR IGNORE INTO torpor_entries(entry, session, field) VALUES (?, ?, ?)",
                [(entry, rowid, field) for field, entry in entries],
            )

    def backfill(self, conn: sqlite3.Connection, field: str, after: int, batch: int) -> int | None:
        """File ``field`` for the next ``batch`` rows after rowid ``after``; the last
        rowid done, None when no row is left."""
        rows = conn.execute(
            "SELECT rowid, id, blob FROM torpor_sessions WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (after, batch),
        ).fetchall()
        for rowid, key, blob in rows:
            conn.execute(
                "DELETE FROM torpor_entries WHERE session = ? AND field = ?", (rowid, field)
            )
            record = _envelope(key, blob)
            entries = [] if record is None else self.entries(record, [field])
            for name, entry in entries:
                conn.execute(
                    "INSERT OR IGNORE INTO torpor_entries(entry, session, field) VALUES (?, ?, ?)",
                    (entry, rowid, name),
                )
        return rows[-1][0] if rows else None


def _stored(key: bytes, old: Row | None) -> tuple[int | None, int | None]:
    """(version, incarnation) of the stored value: its columns, or for a value
    without metadata its envelope (None, None: no intact record)."""
    if old is None:
        return None, None
    if old.incarnation is not None and old.version is not None:
        return old.version, old.incarnation
    record = _envelope(key, old.blob)
    if record is None:
        return None, None
    return i64(record.version), i64(record.incarnation)
