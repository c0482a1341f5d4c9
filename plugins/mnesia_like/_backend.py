"""The mnesia_like backend: sessions in one SQLite database, shared by processes.

The schema and its migrations are in ``_schema.py``; what each write does to a
session's rows in ``_rows.py``; connections, pragmas, the write transaction and the
ram mode in ``_connections.py``; the mailbox in ``_mailbox.py``; multi-session
transactions in ``_transaction.py``; error translation in ``_errors.py``.

Every hook is one short statement in autocommit (a read), or one ``BEGIN
IMMEDIATE`` transaction with one commit (a write: the record, its metadata columns,
its index entries and its mail change together).  Walks page by key, one
autocommit ``SELECT`` per batch, so no snapshot outlives a batch.  Sweeps read the
partial indexes on the idle and due keys (``last_accessed`` and ``deadline``, allowed
to lag a little), whose cost follows the idle or due sessions, not the store; the
native expiry sweep removes a batch per ``BEGIN IMMEDIATE`` with ``DELETE ...
RETURNING``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

from torpor import (
    DELETE,
    BackendStats,
    Capability,
    Clock,
    Expired,
    Record,
    Removal,
    is_valid_id,
)
from torpor.errors import BackendUnavailable, InvalidArgument, ManagerClosed
from torpor.hookspecs import BatchFn, TransactFn
from torpor.indexing import index_entry
from torpor.plugins.mnesia_like._connections import Database, Mode
from torpor.plugins.mnesia_like._errors import is_busy, translate
from torpor.plugins.mnesia_like._mailbox import SqliteMailbox
from torpor.plugins.mnesia_like._rows import COLUMNS, Row, Rows, key_of, live_in_walk, proved
from torpor.plugins.mnesia_like._schema import migrate, pending
from torpor.plugins.mnesia_like._transaction import SqliteTransaction

__all__ = [
    "CAPABILITIES",
    "EXPIRED_IDS",
    "EXPIRE_NEXT_KEYS",
    "EXPIRE_SAME_KEY",
    "IDLE_IDS",
    "RAM_CAPABILITIES",
    "SqliteBackend",
    "due_rows",
]

T = TypeVar("T")
log = logging.getLogger("torpor")
Pair = tuple[str | bytes, bytes | Record]
_DEFAULT_LIMIT: Final = 1 << 20  # max_session_bytes until torpor_open says otherwise
_BACKFILL_BATCH: Final = 500
_COUNT_PAGE: Final = 1000
_CHECKPOINT_EVERY: Final = 64  # sweeper passes (torpor_expire, torpor_idle_ids calls)
_DICTIONARY: Final = "zstd_dictionary"
_DBSTAT: Final = (
    "bytes in use in the sessions table's pages (SQLite dbstat: pgsize - unused, overflow "
    "pages included; indexes and free pages not counted)"
)
_LENGTHS: Final = "sum of the stored records' lengths (SQLite length(blob)); no page overhead"
# The sweeps seek an index by its key, which may lag the time it stands for
# (``_rows.py``, "Index keys"): the exact column decides, on the rows the seek finds.
IDLE_IDS: Final = (
    "SELECT id FROM torpor_sessions WHERE hibernated = 0 AND idle_key < :bound "
    "AND last_accessed < :bound ORDER BY idle_key LIMIT :limit"
)
EXPIRED_IDS: Final = (
    "SELECT id FROM torpor_sessions WHERE due_key IS NOT NULL AND due_key < :bound "
    "AND deadline < :bound ORDER BY due_key LIMIT :limit"
)
# The native sweep's step goes on after (due_key, rowid) in two seeks: a row-value
# ``(due_key, rowid) > (?, ?)`` seeks by due_key alone and filters by rowid, so every
# step would read again the damaged rows (left in place) that share the last key.
EXPIRE_SAME_KEY: Final = (
    f"SELECT {COLUMNS} FROM torpor_sessions WHERE due_key IS NOT NULL "  # noqa: S608
    "AND due_key = :key AND rowid > :rowid AND deadline < :bound ORDER BY rowid LIMIT :limit"
)
EXPIRE_NEXT_KEYS: Final = (
    f"SELECT {COLUMNS} FROM torpor_sessions WHERE due_key IS NOT NULL "  # noqa: S608
    "AND due_key > :key AND due_key < :bound AND deadline < :bound "
    "ORDER BY due_key, rowid LIMIT :limit"
)

CAPABILITIES: frozenset[Capability] = frozenset(
    {
        Capability.PERSISTENT,
        Capability.MULTI_PROCESS,
        Capability.ATOMIC_UPDATE,
        Capability.NATIVE_ITERATION,
        Capability.NATIVE_HIBERNATION,
        Capability.NATIVE_EXPIRY,
        Capability.SHARED_MAILBOX,
        Capability.SECONDARY_INDEX,
        Capability.TRANSACTIONS,
    }
)
"""What the ``disc`` and ``disc_only`` modes claim; also the factory's metadata."""
RAM_CAPABILITIES: frozenset[Capability] = CAPABILITIES - {
    Capability.PERSISTENT,
    Capability.MULTI_PROCESS,
}
"""What the ``ram`` mode claims: the database lives in this process only."""


class SqliteBackend:
    """See the module docstring; build it with ``torpor.open("mnesia_like", path=...)``."""

    name = "mnesia_like"

    def __init__(
        self, path: Path | None, mode: Mode, *, busy_timeout_ms: int, touch_resolution_ms: int
    ) -> None:
        self._touch_resolution = touch_resolution_ms
        self.closing = False
        self._passes = 0
        self._passes_lock = threading.Lock()
        self.rows = Rows(_DEFAULT_LIMIT)
        self.db = Database(path, mode, busy_timeout_ms)
        try:
            self._setup()
        except BaseException:
            self.db.close(optimize=False)
            raise
        self.mailbox = SqliteMailbox(self.db, lambda: self.closing)

    def _setup(self) -> None:
        db = self.db
        if db.mode.persistent:
            db.read("cannot open", _wal)
        if db.read("cannot read the schema of", pending):
            db.write("cannot set up the schema of", migrate)

    # -- lifecycle ---------------------------------------------------------------------
    def torpor_capabilities(self) -> Iterable[Capability]:
        return CAPABILITIES if self.db.mode.persistent else RAM_CAPABILITIES

    def torpor_open(self, clock: Clock, options: Mapping[str, Any]) -> None:
        self.rows.limit = int(options.get("max_session_bytes") or _DEFAULT_LIMIT)
        self.rows.set_hibernate_after(options.get("hibernate_after_ms"))

    def torpor_touch_resolution_ms(self) -> int:
        return self._touch_resolution

    def torpor_close(self, urgent: bool) -> None:
        """Close every connection, after ``PRAGMA optimize`` (skipped if ``urgent``).
        Idempotent.  A transaction still running (only after an urgent close) fails
        instead of committing."""
        if self.db.closed:
            return
        self.closing = True
        self.mailbox.close()
        self.db.close(optimize=not urgent)

    # -- required data hooks -----------------------------------------------------------
    def torpor_fetch(self, session_id: str) -> bytes | None:
        key = session_id.encode("utf-8")
        with self.db.guard():
            try:
                found = (
                    self.db.conn()
                    .execute("SELECT blob FROM torpor_sessions WHERE id = ?", (key,))
                    .fetchone()
                )
            except sqlite3.Error as exc:
                raise translate(exc, "fetch") from exc
        if found is None:
            return None
        blob: bytes = found[0]
        return blob

    def torpor_store(self, record: Record) -> None:
        rows = self.rows
        key = record.id.encode("utf-8")
        self._write("store", lambda conn: rows.put(conn, record, rows.row(conn, key)))
        self.mailbox.changed(record.id)

    def torpor_delete(self, session_id: str) -> bool:
        key = session_id.encode("utf-8")
        existed = self._write("delete", lambda conn: self.rows.remove(conn, key, DELETE.reason))
        self.mailbox.changed(session_id)
        return existed

    def torpor_ids(self) -> list[str | bytes]:
        return self.db.read(
            "ids",
            lambda conn: [key_of(k) for (k,) in conn.execute("SELECT id FROM torpor_sessions")],
        )

    # -- native hooks ------------------------------------------------------------------
    def torpor_transact(self, session_id: str, fn: TransactFn) -> None:
        key = session_id.encode("utf-8")
        self._write("transact", lambda conn: self._apply(conn, key, fn))
        self.mailbox.changed(session_id)

    def torpor_transact_batch(self, session_ids: Sequence[str], fn: BatchFn) -> None:
        def batch(conn: sqlite3.Connection) -> None:
            for sid in session_ids:
                self._apply(conn, sid.encode("utf-8"), partial(fn, sid))

        self._write("transact_batch", batch)
        for sid in session_ids:
            self.mailbox.changed(sid)

    def torpor_transaction(self) -> SqliteTransaction:
        """A multi-session transaction, begun (see ``_transaction.py``)."""
        return self.begin_transaction()

    def begin_transaction(self) -> SqliteTransaction:
        self._check_open()
        return SqliteTransaction.begin(self)

    def torpor_iterate(self, cursor: Any, batch_size: int) -> tuple[list[Pair], Any]:
        rows = self.db.read(
            "iterate",
            lambda conn: conn.execute(
                "SELECT id, blob FROM torpor_sessions WHERE id > ? ORDER BY id LIMIT ?",
                (b"" if cursor is None else cursor, batch_size),
            ).fetchall(),
        )
        items: list[Pair] = [(key_of(k), blob) for k, blob in rows]
        return items, (rows[-1][0] if len(rows) == batch_size else None)

    def torpor_iterate_ids(
        self, cursor: Any, batch_size: int, now_ms: int
    ) -> tuple[list[str | bytes], Any]:
        """``ids()``: the same walk, each row checked against its proof instead of
        decoded (``_rows.py``)."""
        limit = self.rows.limit

        def walk(conn: sqlite3.Connection) -> tuple[list[str | bytes], bytes | None, int]:
            # Row by row, never the batch's blobs at once: the proof needs each blob,
            # and a page of 1,000 of them held together was 3.7 MiB.
            ids: list[str | bytes] = []
            last, looked = None, 0
            for r in conn.execute(
                f"SELECT {COLUMNS} FROM torpor_sessions WHERE id > ? ORDER BY id LIMIT ?",  # noqa: S608
                (b"" if cursor is None else cursor, batch_size),
            ):
                looked, last = looked + 1, r[1]
                if live_in_walk(Row(*r), now_ms, limit):
                    ids.append(key_of(r[1]))
            return ids, last, looked

        ids, last, looked = self.db.read("iterate_ids", walk)
        return ids, (last if looked == batch_size else None)

    def torpor_count(self, now_ms: int) -> int:
        """Exact: the ids walk's count (rows checked against their proofs, only the
        unproved ones decoded), a page per short read, so ``len(mgr)`` decodes
        nothing the proofs vouch for."""
        total, cursor = 0, None
        while True:
            ids, cursor = self.torpor_iterate_ids(cursor, _COUNT_PAGE, now_ms)
            total += sum(1 for key in ids if is_valid_id(key))  # as ids() drops the others
            if cursor is None:
                return total

    def torpor_idle_ids(self, cutoff_ms: int, limit: int) -> list[str]:
        self._housekeeping()
        return self._ids("idle_ids", IDLE_IDS, cutoff_ms, limit)

    def torpor_expired_ids(self, now_ms: int, limit: int) -> list[str]:
        return self._ids("expired_ids", EXPIRED_IDS, now_ms, limit)

    def torpor_expire(self, now_ms: int, batch_size: int) -> Iterator[Expired]:
        """Due rows removed a batch per ``BEGIN IMMEDIATE``: only rows whose proof holds
        (``_rows.py``); any other due row stays and is reported damaged, and the next
        batch starts after it (by due_key, then rowid)."""
        self._housekeeping()
        limit = max(batch_size, 1)
        after: tuple[int, int] = (-(1 << 63), -1)
        while True:
            step = partial(_expire_step, now_ms=now_ms, limit=limit, after=after)
            removed, damaged, last = self._write("expire", step)
            for sid, _incarnation in removed:
                self.mailbox.changed(sid)
            if removed or damaged:
                yield Expired(count=len(removed), removed=removed, damaged=damaged)
            if last is None:
                return
            after = last

    def torpor_stats(self) -> BackendStats:
        """The bytes the sessions table's pages hold (``dbstat``: page size less unused
        space, overflow pages included), or without ``dbstat`` the blobs' lengths."""

        def used(conn: sqlite3.Connection) -> tuple[int, str]:
            try:
                found = conn.execute(
                    "SELECT sum(pgsize - unused) FROM dbstat WHERE name = 'torpor_sessions'"
                ).fetchone()
                return int(found[0] or 0), _DBSTAT
            except sqlite3.OperationalError:  # SQLite built without SQLITE_ENABLE_DBSTAT_VTAB
                found = conn.execute("SELECT sum(length(blob)) FROM torpor_sessions").fetchone()
                return int(found[0] or 0), _LENGTHS

        return BackendStats(*self.db.read("stats", used))

    def torpor_create_index(self, field: str) -> None:
        """Mark ``field`` (writers file it from then on), backfill the stored rows a
        batch per transaction, then mark it ready: ``find`` answers through it only
        once it is ready, and lets the manager scan until then."""
        state = self.db.read(
            "create_index",
            lambda conn: conn.execute(
                "SELECT state FROM torpor_fields WHERE name = ?", (field,)
            ).fetchone(),
        )
        if state is not None and state[0] == "ready":
            return
        self._write(
            "create_index",
            lambda conn: conn.execute(
                "INSERT OR IGNORE INTO torpor_fields(name, state) VALUES (?, 'backfill')",
                (field,),
            ),
        )
        after: int | None = 0
        while after is not None:
            self._check_open()
            batch = partial(self.rows.backfill, field=field, after=after, batch=_BACKFILL_BATCH)
            after = self._write("create_index", batch)
        self._write(
            "create_index",
            lambda conn: conn.execute(
                "UPDATE torpor_fields SET state = 'ready' WHERE name = ?", (field,)
            ),
        )

    def torpor_find(self, criteria: Mapping[str, Any]) -> list[Pair] | None:
        def lookup(conn: sqlite3.Connection) -> list[Pair] | None:
            ready = {
                name
                for (name,) in conn.execute("SELECT name FROM torpor_fields WHERE state = 'ready'")
            }
            for field, value in criteria.items():
                if field not in ready:
                    continue
                try:
                    entry = index_entry(field, value)
                except (TypeError, ValueError):
                    continue  # no session can hold such a value: let the manager compare
                rows = conn.execute(
                    "SELECT s.id, s.blob FROM torpor_entries e JOIN torpor_sessions s "
                    "ON s.rowid = e.session WHERE e.entry = ?",
                    (entry,),
                ).fetchall()
                return [(key_of(k), blob) for k, blob in rows]
            return None  # nothing indexed (or not ready yet): the manager scans

        return self.db.read("find", lookup)

    def torpor_mailbox(self) -> SqliteMailbox:
        return self.mailbox

    def torpor_shared_dictionary(self, proposal: bytes | None) -> bytes | None:
        """The zstd dictionary in ``torpor_meta``, inserted once, never replaced."""
        select = "SELECT value FROM torpor_meta WHERE key = ?"
        if proposal is None:
            found = self.db.read(
                "shared_dictionary", lambda conn: conn.execute(select, (_DICTIONARY,)).fetchone()
            )
            return None if found is None else bytes(found[0])

        def offer(conn: sqlite3.Connection) -> bytes:
            conn.execute(
                "INSERT OR IGNORE INTO torpor_meta(key, value) VALUES (?, ?)",
                (_DICTIONARY, proposal),
            )
            return bytes(conn.execute(select, (_DICTIONARY,)).fetchone()[0])

        return self._write("shared_dictionary", offer)

    # -- housekeeping ------------------------------------------------------------------
    def backup(self, path: str | os.PathLike[str]) -> None:
        """Write a consistent copy of the database to ``path`` (a new file, 0600) with
        ``VACUUM INTO``: compacted, readable by ``torpor.open("mnesia_like",
        path=...)``, made while other connections go on reading and writing.

        ``InvalidArgument`` if ``path`` exists already; ``BackendUnavailable`` if the
        copy fails (no partial file is left behind)."""
        target = Path(os.fspath(path))
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise InvalidArgument(
                f"backup target {str(target)!r} exists already; name a new file",
                argument="path",
            ) from None
        except OSError as exc:
            raise BackendUnavailable(f"mnesia_like cannot create {str(target)!r}: {exc}") from exc
        os.close(fd)
        try:
            self.db.read("backup", lambda conn: conn.execute("VACUUM INTO ?", (str(target),)))
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    def checkpoint(self) -> None:
        """``PRAGMA wal_checkpoint(TRUNCATE)``: the WAL's content into the database file,
        and the WAL cut to zero bytes.  Best effort: a busy database is left for the
        next time."""
        if not self.db.mode.persistent:
            return
        try:
            self.db.read("checkpoint", lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
        except BackendUnavailable:
            log.debug("torpor: mnesia_like checkpoint skipped", exc_info=True)

    def _housekeeping(self) -> None:
        with self._passes_lock:
            self._passes += 1
            due = self._passes % _CHECKPOINT_EVERY == 0
        if due:
            self.checkpoint()

    # -- the conformance kit -----------------------------------------------------------
    def conformance_plant(self, key: bytes, value: bytes) -> None:
        """For the conformance kit's damaged-data tests: write ``value`` under ``key``
        as another program sharing the database would: the row's id and blob only, no
        metadata, no index entries (over an existing row: its blob alone changes)."""
        self._write(
            "plant",
            lambda conn: conn.execute(
                "INSERT INTO torpor_sessions(id, blob) VALUES (?, ?) "
                "ON CONFLICT(id) DO UPDATE SET blob = excluded.blob",
                (key, value),
            ),
        )

    # -- internals ---------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closing or self.db.closed:
            raise ManagerClosed("this mnesia_like backend is closed; open a new manager")

    def _write(self, where: str, body: Callable[[sqlite3.Connection], T]) -> T:
        def run(conn: sqlite3.Connection) -> T:
            result = body(conn)
            if self.closing:  # closed urgently while this ran: not acknowledged
                raise ManagerClosed("the manager was closed; this write was not applied")
            return result

        return self.db.write(where, run)

    def _apply(self, conn: sqlite3.Connection, key: bytes, fn: TransactFn) -> None:
        rows = self.rows
        old = rows.row(conn, key)
        change = fn(None if old is None else old.blob)
        if change is None:
            return
        if isinstance(change, Removal):
            rows.remove(conn, key, change.reason)
        elif isinstance(change, Record):
            rows.put(conn, change, old)
        else:
            raise BackendUnavailable(
                f"a transaction function returned {type(change).__name__}; expected a "
                "Record, a torpor.Removal or None"
            )

    def _ids(self, where: str, sql: str, bound: int, limit: int) -> list[str]:
        rows = self.db.read(
            where, lambda conn: conn.execute(sql, {"bound": bound, "limit": limit}).fetchall()
        )
        found = []
        for (key,) in rows:
            sid = key_of(key)
            if isinstance(sid, str):
                found.append(sid)
        return found


def _wal(conn: sqlite3.Connection) -> None:
    """WAL mode (persistent in the file); a new file needs the lock for a moment."""
    if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return  # the usual case: set when the file was created; no lock needed
    for _attempt in range(50):
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            continue
        if str(mode).lower() != "wal":
            raise BackendUnavailable(f"mnesia_like: the database refused WAL mode ({mode})")
        return
    raise BackendUnavailable("mnesia_like: the database stayed locked while setting WAL mode")


def due_rows(
    conn: sqlite3.Connection, now_ms: int, after: tuple[int, int], limit: int
) -> list[tuple[Any, ...]]:
    """The next ``limit`` rows due at ``now_ms`` (``deadline < now_ms``) after ``after``
    (due_key, rowid), in that order: what a step of the native sweep looks at."""
    params = {"bound": now_ms, "key": after[0], "rowid": after[1], "limit": limit}
    rows: list[tuple[Any, ...]] = conn.execute(EXPIRE_SAME_KEY, params).fetchall()
    if len(rows) < limit:
        params["limit"] = limit - len(rows)
        rows += conn.execute(EXPIRE_NEXT_KEYS, params).fetchall()
    return rows


def _expire_step(
    conn: sqlite3.Connection, now_ms: int, limit: int, after: tuple[int, int]
) -> tuple[list[tuple[str, int]], list[str | bytes], tuple[int, int] | None]:
    """One batch: remove the proved due rows among the next ``limit`` after ``after``
    (due_key, rowid); return them, the unproved ones, and where to go on (None: no
    due row is left)."""
    rows = due_rows(conn, now_ms, after, limit)
    good: list[int] = []
    damaged: list[str | bytes] = []
    for raw in rows:
        row = Row(*raw)
        if proved(row):
            good.append(row.rowid)
        else:
            damaged.append(key_of(row.id))
    removed: list[tuple[str, int]] = []
    if good:
        marks = ", ".join("?" * len(good))
        for key, incarnation in conn.execute(
            f"DELETE FROM torpor_sessions WHERE rowid IN ({marks}) RETURNING id, incarnation",  # noqa: S608
            good,
        ):
            removed.append((key.decode("utf-8"), int(incarnation)))
    last = (rows[-1][-1], rows[-1][0]) if len(rows) == limit else None  # due_key, rowid
    return removed, damaged, last
