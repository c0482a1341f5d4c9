"""The schema, and its versioned migrations (sqlite-utils ``Migrations``).

Tables (all ``STRICT``; times in the manager's milliseconds)::

    torpor_sessions   rowid, id BLOB UNIQUE, blob, and the metadata the indexes and
                      the ids walk read: last_accessed, hibernated, deadline
                      (expires_at, NULL if never), incarnation, version, inflated,
                      proof (see _rows.py), and the two index keys idle_key and
                      due_key (last_accessed and deadline, each allowed to lag a
                      little: _rows.py, "Index keys").  A value another program
                      wrote has the id and blob only, metadata NULL.
        torpor_sessions_idle      partial: idle_key WHERE hibernated = 0
        torpor_sessions_deadline  partial: due_key WHERE due_key IS NOT NULL
    torpor_fields     name -> state ('backfill' while create_index runs, 'ready')
    torpor_entries    (entry, session) of the secondary index, and field; entry is
                      torpor.indexing.index_entry, session the sessions rowid
    torpor_mail       seq (rowid: each lane FIFO), session (rowid), incarnation,
                      lane (0 priority, 1 normal), body
                      indexed by (session, incarnation, lane, seq)
    torpor_tombs      (session id, incarnation) -> when (ns) it was cancelled
    torpor_meta       key -> value (the shared zstd dictionary)

A trigger deletes a session's mail and index entries with its row, however the row
goes (a delete, a sweep's ``DELETE ... RETURNING``), in the same transaction.

Why ``id`` is a BLOB (the UTF-8 bytes of the id): a key another program wrote may
not be UTF-8, and a BLOB compares with ``memcmp``, which is UTF-8 byte order, so the
walks page by ``id > ?`` on the unique index with no collation to get wrong.  Keyset
pages on a unique key give ``torpor_iterate`` its exactly-once walk without
tombstones: each page starts strictly after the last key returned, so a key deleted
and created again behind the walk is not met twice, and one ahead of it is met once.

Migrations run inside torpor's own ``BEGIN IMMEDIATE`` (sqlite-utils then nests its
per-migration transactions as savepoints), so two processes opening a new file never
race: the second waits for the lock, then finds nothing pending.  sqlite-utils'
``table.transform()`` is never used on these tables (it refuses partial indexes):
a change of layout is an explicit rebuild, as ``0002_blob_ids`` is.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from sqlite_utils import Database, Migrations

from torpor.errors import BackendUnavailable

__all__ = ["MIGRATIONS", "NAMES", "SCHEMA", "migrate", "pending"]

SCHEMA: Final = "torpor.mnesia_like"
MIGRATIONS = Migrations(SCHEMA)

_METADATA: Final = {
    "last_accessed": int,
    "hibernated": int,
    "deadline": int,
    "incarnation": int,
    "version": int,
    "inflated": int,
    "proof": int,
}


def _session_indexes(db: Database) -> None:
    db.table("torpor_sessions").create_index(["id"], "torpor_sessions_id", unique=True)
    db.execute(
        "CREATE INDEX torpor_sessions_idle ON torpor_sessions(last_accessed) WHERE hibernated = 0"
    )
    db.execute(
        "CREATE INDEX torpor_sessions_deadline ON torpor_sessions(deadline) "
        "WHERE deadline IS NOT NULL"
    )
    db.execute(
        "CREATE TRIGGER torpor_sessions_gone AFTER DELETE ON torpor_sessions BEGIN "
        "DELETE FROM torpor_mail WHERE session = OLD.rowid; "
        "DELETE FROM torpor_entries WHERE session = OLD.rowid; END"
    )


@MIGRATIONS(name="0001_initial")
def _initial(db: Database) -> None:
    """The first layout: ids as TEXT (it could not hold a key that is not UTF-8)."""
    db.table("torpor_sessions").create(
        {"id": str, "blob": bytes, **_METADATA}, not_null=["id", "blob"], strict=True
    )
    db.table("torpor_fields").create({"name": str, "state": str}, pk="name", strict=True)
    db.table("torpor_entries").create(
        {"entry": bytes, "session": int, "field": str},
        pk=("entry", "session"),
        not_null=["field"],
        strict=True,
    )
    db.table("torpor_entries").create_index(["session", "field"], "torpor_entries_session")
    db.table("torpor_mail").create(
        {"seq": int, "session": int, "incarnation": int, "lane": int, "body": bytes},
        pk="seq",
        not_null=["session", "incarnation", "lane", "body"],
        strict=True,
    )
    db.table("torpor_mail").create_index(
        ["session", "incarnation", "lane", "seq"], "torpor_mail_lanes"
    )
    db.table("torpor_tombs").create(
        {"session": bytes, "incarnation": int, "at": int},
        pk=("session", "incarnation"),
        not_null=["at"],
        strict=True,
    )
    db.table("torpor_tombs").create_index(["at"], "torpor_tombs_at")
    db.table("torpor_meta").create({"key": str, "value": bytes}, pk="key", strict=True)
    _session_indexes(db)


@MIGRATIONS(name="0002_blob_ids")
def _blob_ids(db: Database) -> None:
    """Rebuild the sessions table with BLOB ids, keeping every rowid (mail and index
    entries point to them)."""
    db.table("torpor_sessions_new").create(
        {"id": bytes, "blob": bytes, **_METADATA}, not_null=["id", "blob"], strict=True
    )
    columns = ", ".join(["blob", *_METADATA])
    db.execute(
        f"INSERT INTO torpor_sessions_new(rowid, id, {columns}) "  # noqa: S608 (no input)
        f"SELECT rowid, CAST(id AS BLOB), {columns} FROM torpor_sessions"
    )
    db.execute("DROP TABLE torpor_sessions")  # its indexes and trigger go with it
    db.execute("ALTER TABLE torpor_sessions_new RENAME TO torpor_sessions")
    _session_indexes(db)


# A row whose keys break their rule (``_rows.py``, "Index keys") is keyed at its
# times.  torpor itself never writes one; a process still running a torpor from
# before the keys does (no keys on an insert; an update that moves a deadline below
# its key), and so may another program: without this the sweeps would never meet
# those rows again.  Checking the rule costs an UPDATE a few VM steps.
_KEYS_WRONG: Final = (
    "NEW.last_accessed IS NOT NULL AND (NEW.idle_key IS NULL "
    "OR NEW.idle_key > NEW.last_accessed OR (NEW.due_key IS NULL) <> (NEW.deadline IS NULL) "
    "OR NEW.due_key > NEW.deadline)"
)
_REKEY: Final = (
    "UPDATE torpor_sessions SET idle_key = NEW.last_accessed, due_key = NEW.deadline "
    "WHERE rowid = NEW.rowid"
)


@MIGRATIONS(name="0003_index_keys")
def _index_keys(db: Database) -> None:
    """Move the idle and deadline indexes onto key columns of their own, which may lag
    the times they stand for (``_rows.py``, "Index keys"), so most writes leave the
    indexes alone.  The keys start equal to the times; triggers key any row written
    without them (``_KEYS_WRONG``)."""
    db.execute("ALTER TABLE torpor_sessions ADD COLUMN idle_key INTEGER")
    db.execute("ALTER TABLE torpor_sessions ADD COLUMN due_key INTEGER")
    db.execute("UPDATE torpor_sessions SET idle_key = last_accessed, due_key = deadline")
    db.execute("DROP INDEX torpor_sessions_idle")
    db.execute("DROP INDEX torpor_sessions_deadline")
    db.execute(
        "CREATE INDEX torpor_sessions_idle ON torpor_sessions(idle_key) WHERE hibernated = 0"
    )
    db.execute(
        "CREATE INDEX torpor_sessions_deadline ON torpor_sessions(due_key) "
        "WHERE due_key IS NOT NULL"
    )
    db.execute(
        "CREATE TRIGGER torpor_sessions_keyed AFTER INSERT ON torpor_sessions "
        f"WHEN {_KEYS_WRONG} BEGIN {_REKEY}; END"
    )
    db.execute(
        "CREATE TRIGGER torpor_sessions_rekeyed AFTER UPDATE OF last_accessed, deadline, "
        f"idle_key, due_key ON torpor_sessions WHEN {_KEYS_WRONG} BEGIN {_REKEY}; END"
    )


NAMES: Final = ("0001_initial", "0002_blob_ids", "0003_index_keys")
"""Every migration, in order (what a database this torpor can open may have applied)."""


def pending(conn: sqlite3.Connection) -> bool:
    """Whether the database needs migrating: a read, no lock taken (so a backend opened
    while this thread holds the write lock, from inside a transaction function, does
    not wait for itself).

    A database some migration of which this torpor does not know was written by a
    newer one: refused (``BackendUnavailable``), never guessed at."""
    db = _database(conn)
    unknown = [m.name for m in MIGRATIONS.applied(db) if m.name not in NAMES]
    if unknown:
        raise BackendUnavailable(
            f"mnesia_like: the database has schema migrations this torpor does not know "
            f"({', '.join(unknown)}): it was written by a newer torpor"
        )
    return bool(MIGRATIONS.pending(db))


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the database to the current layout.  Call inside ``BEGIN IMMEDIATE``."""
    if pending(conn):  # again, under the lock: another process may have done it
        MIGRATIONS.apply(_database(conn))


def _database(conn: sqlite3.Connection) -> Database:
    return Database(conn, recursive_triggers=False, execute_plugins=False)
