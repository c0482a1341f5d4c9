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

Index keys
==========

The idle and deadline indexes are not on ``last_accessed`` and ``deadline`` but on
two keys, ``idle_key`` and ``due_key``, that may lag them: a write keeps the stored
key while it is at most the time it stands for and less than a *slack* behind it,
and moves it to the time otherwise.  SQLite rewrites an index's entry whenever an
``UPDATE`` names its column, even to the same value; a moved entry dirties two more
pages of the index, and each page is another write to the WAL at the commit.  With
exact keys an ``update`` of a 3 KB session cost twice a raw one; with the keys kept,
a few per cent more (``tools/mnesia_write_floor.py``).

A key is never ahead of its time, so a sweep that seeks ``key < cutoff`` finds every
session that qualifies; it also meets sessions whose time is less than a slack past
the cutoff, and the exact column (in the row, no decoding) drops them.  The slack is
an eighth of the threshold, at most ``MAX_SLACK_MS``: an eighth of
``hibernate_after_ms`` for ``idle_key``, an eighth of the session's ``timeout_ms``
for ``due_key``.  So a sweep reads, besides what it finds, at most the sessions last
touched within an eighth of the threshold (or a minute) before the cutoff; and a
session written more often than that moves its index entries at most once per slack.
Sweeps return ids in key order: oldest first, to within the slack.

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
    "MAX_SLACK_MS",
    "UPDATES",
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
    "rowid, id, blob, last_accessed, hibernated, deadline, incarnation, version, inflated, "
    "proof, idle_key, due_key"
)
MAX_SLACK_MS: Final = 60_000
"""The most an index key may lag behind the time it stands for (see the docstring)."""
_SLACK_SHARE: Final = 8  # a key lags at most this share of its threshold
# The UPDATE of a stored row: every column no index reads, and those that one does
# only when they change (bit 1: hibernated, 2: idle_key, 4: due_key).  SQLite
# rewrites an index entry whenever the UPDATE names one of its columns, even with the
# value it had: naming them only when they move is what spares the indexes' pages.
UPDATES: Final = {
    mask: "UPDATE torpor_sessions SET blob = ?, last_accessed = ?, deadline = ?, "  # noqa: S608
    "incarnation = ?, version = ?, inflated = ?, proof = ?"
    + "".join(
        f", {column} = ?"
        for bit, column in ((1, "hibernated"), (2, "idle_key"), (4, "due_key"))
        if mask & bit
    )
    + " WHERE rowid = ?"
    for mask in range(8)
}
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
    idle_key: int | None
    due_key: int | None


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
        self.idle_slack = 0  # how far idle_key may lag last_accessed (set by torpor_open)

    def set_hibernate_after(self, hibernate_after_ms: int | None) -> None:
        """Let ``idle_key`` lag ``last_accessed`` by up to an eighth of the idle
        threshold (at most ``MAX_SLACK_MS``; never hibernating: the most)."""
        if hibernate_after_ms is None:
            self.idle_slack = MAX_SLACK_MS
        else:
            self.idle_slack = min(max(hibernate_after_ms, 0) // _SLACK_SHARE, MAX_SLACK_MS)

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
        values = [blob, accessed, deadline, incarnation, version, inflated, proof]
        if old is None:
            rowid = conn.execute(
                "INSERT INTO torpor_sessions(id, blob, last_accessed, deadline, incarnation, "
                "version, inflated, proof, hibernated, idle_key, due_key) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING rowid",
                (key, *values, hibernated, accessed, deadline),
            ).fetchone()[0]
        else:
            rowid = old.rowid
            idle_key = _key(old.idle_key, accessed, self.idle_slack)
            due_key = None if deadline is None else _key(old.due_key, deadline, _due_slack(record))
            mask = 0
            for bit, now, before in (
                (1, hibernated, old.hibernated),
                (2, idle_key, old.idle_key),
                (4, due_key, old.due_key),
            ):
                if now != before:
                    mask |= bit
                    values.append(now)
            conn.execute(UPDATES[mask], (*values, rowid))
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


def _key(old: int | None, value: int, slack: int) -> int:
    """The index key for ``value``: the stored key while it lags ``value`` by less
    than ``slack`` (never ahead of it), else ``value`` itself."""
    if old is not None and old <= value < old + slack:
        return old
    return value


def _due_slack(record: Record) -> int:
    timeout = record.timeout_ms or 0
    return min(max(timeout, 0) // _SLACK_SHARE, MAX_SLACK_MS)


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
