"""The mnesia_like backend (SQLite): modes, files, schema migrations, damage,
contention, several threads and processes, multi-session transactions, backup.

The conformance kit covers the hook contracts (``torpor conformance mnesia_like``);
these tests cover what is particular to SQLite.  Real database files in tmp_path,
time from ``torpor.ManualClock``.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

import torpor
from torpor import Capability, describe_factory
from torpor.conformance.helpers import expect_raises, expect_returns
from torpor.plugins.mnesia_like import SqliteBackend, create_backend
from torpor.plugins.mnesia_like._backend import (
    EXPIRE_NEXT_KEYS,
    EXPIRE_SAME_KEY,
    EXPIRED_IDS,
    IDLE_IDS,
)
from torpor.plugins.mnesia_like._rows import COLUMNS

SPAWN = multiprocessing.get_context("spawn")


def _open(path: Path, clock: torpor.ManualClock | None = None, **options: Any) -> torpor.Manager:
    return torpor.open(
        create_backend(path=path, **options),
        clock=clock or torpor.ManualClock(),
        sweeper=False,
    )


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# -- modes -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("storage", "synchronous", "small_cache"),
    [("disc", 1, False), ("disc_only", 2, True)],  # PRAGMA synchronous: 1 NORMAL, 2 FULL
)
def test_disc_modes_set_wal_and_their_pragmas(
    tmp_path: Path, storage: str, synchronous: int, small_cache: bool
) -> None:
    backend = create_backend(path=tmp_path / "s.db", storage=storage)
    with torpor.open(backend, sweeper=False) as mgr:
        mgr.create({"x": 1})
        conn = backend.db.conn()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == synchronous
        cache = conn.execute("PRAGMA cache_size").fetchone()[0]
        assert (cache == -256) is small_cache, cache
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
        assert mgr.capabilities == create_backend.capabilities  # type: ignore[attr-defined]
        assert Capability.PERSISTENT in mgr.capabilities


def test_ram_mode_is_shared_by_path_within_the_process_and_touches_no_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ram.db"
    first = torpor.open(create_backend(path=path, storage="ram"), sweeper=False)
    second = torpor.open(create_backend(path=path, storage="ram"), sweeper=False)
    other = torpor.open(create_backend(path=tmp_path / "other", storage="ram"), sweeper=False)
    try:
        assert Capability.PERSISTENT not in first.capabilities
        assert Capability.MULTI_PROCESS not in first.capabilities
        declared = describe_factory(create_backend, options={"storage": "ram"})
        assert first.capabilities == declared.capabilities
        s = first.create({"n": 1})
        expect_returns({"n": 1}, lambda: second.get(s.id).data, what="second.get(id).data")  # type: ignore[union-attr]
        expect_returns(None, other.peek, s.id)
        assert not path.exists() and list(tmp_path.iterdir()) == []
    finally:
        first.close()
        second.close()
        other.close()
    # The last manager closed: the database went with it.
    with torpor.open(create_backend(path=path, storage="ram"), sweeper=False) as again:
        expect_returns(None, again.peek, s.id)


def test_ram_mode_without_a_path_is_private(tmp_path: Path) -> None:
    with (
        torpor.open(create_backend(storage="ram"), sweeper=False) as a,
        torpor.open(create_backend(storage="ram"), sweeper=False) as b,
    ):
        s = a.create({})
        expect_returns(None, b.peek, s.id)


def test_options_are_checked() -> None:
    expect_raises(torpor.ConfigError, create_backend, storage="tape", path="x.db")
    expect_raises(torpor.ConfigError, create_backend)  # disc needs a path
    expect_raises(torpor.ConfigError, create_backend, path="x.db", busy_timeout_ms=0)
    expect_raises(torpor.ConfigError, create_backend, path="x.db", colour="red")
    expect_raises(torpor.InvalidArgument, create_backend, path="")
    expect_raises(torpor.InvalidArgument, create_backend, path=123)


# -- files -----------------------------------------------------------------------------
def test_files_are_0600_and_a_created_folder_0700(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "deeper"
    path = folder / "s.db"
    with _open(path) as mgr:
        mgr.create({"x": 1})  # the WAL and its index exist while the manager is open
        files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
        assert files == {"s.db": 0o600, "s.db-wal": 0o600, "s.db-shm": 0o600}, files
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700


def test_a_file_that_is_not_sqlite_says_so_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    error = expect_raises(torpor.BackendUnavailable, create_backend, path=path)
    assert "not a SQLite database" in str(error), error
    assert isinstance(error.__cause__, sqlite3.DatabaseError)
    assert path.read_bytes().startswith(b"these are my notes")  # left as it was


def test_a_damaged_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with _open(path) as mgr:
        for i in range(50):
            mgr.create({"pad": "x" * 2000}, session_id=f"s{i}")
    page = _raw(path).execute("PRAGMA page_size").fetchone()[0]
    with path.open("r+b") as f:  # every page but the first (the schema) garbled
        f.seek(page)
        size = path.stat().st_size - page
        f.write(bytes((i * 131 + 7) % 256 for i in range(size)))

    def use() -> None:
        with _open(path) as mgr:
            list(mgr.ids())

    error = expect_raises(torpor.BackendUnavailable, use)
    assert "damaged" in str(error) or "not a SQLite database" in str(error), error


# -- schema ----------------------------------------------------------------------------
_V1 = """
CREATE TABLE _sqlite_migrations (id INTEGER PRIMARY KEY, migration_set TEXT, name TEXT,
    applied_at TEXT);
CREATE UNIQUE INDEX idx__sqlite_migrations_migration_set_name
    ON _sqlite_migrations (migration_set, name);
INSERT INTO _sqlite_migrations (migration_set, name, applied_at)
    VALUES ('torpor.mnesia_like', '0001_initial', '2025-01-01');
CREATE TABLE torpor_sessions (id TEXT NOT NULL, blob BLOB NOT NULL, last_accessed INTEGER,
    hibernated INTEGER, deadline INTEGER, incarnation INTEGER, version INTEGER,
    inflated INTEGER, proof INTEGER) STRICT;
CREATE UNIQUE INDEX torpor_sessions_id ON torpor_sessions (id);
CREATE INDEX torpor_sessions_idle ON torpor_sessions(last_accessed) WHERE hibernated = 0;
CREATE INDEX torpor_sessions_deadline ON torpor_sessions(deadline)
    WHERE deadline IS NOT NULL;
CREATE TABLE torpor_fields (name TEXT PRIMARY KEY, state TEXT) STRICT;
CREATE TABLE torpor_entries (entry BLOB, session INTEGER, field TEXT NOT NULL,
    PRIMARY KEY (entry, session)) STRICT;
CREATE INDEX torpor_entries_session ON torpor_entries (session, field);
CREATE TABLE torpor_mail (seq INTEGER PRIMARY KEY, session INTEGER NOT NULL,
    incarnation INTEGER NOT NULL, lane INTEGER NOT NULL, body BLOB NOT NULL) STRICT;
CREATE INDEX torpor_mail_lanes ON torpor_mail (session, incarnation, lane, seq);
CREATE TABLE torpor_tombs (session BLOB, incarnation INTEGER, at INTEGER NOT NULL,
    PRIMARY KEY (session, incarnation)) STRICT;
CREATE INDEX torpor_tombs_at ON torpor_tombs (at);
CREATE TABLE torpor_meta (key TEXT PRIMARY KEY, value BLOB) STRICT;
CREATE TRIGGER torpor_sessions_gone AFTER DELETE ON torpor_sessions BEGIN
    DELETE FROM torpor_mail WHERE session = OLD.rowid;
    DELETE FROM torpor_entries WHERE session = OLD.rowid; END;
"""


def test_a_file_of_the_first_schema_is_migrated_keeping_sessions_and_mail(
    tmp_path: Path,
) -> None:
    """Schema 1 kept ids as TEXT; opening it rebuilds the table with BLOB ids (rowids
    kept, so mail and index entries still point to their sessions)."""
    path = tmp_path / "old.db"
    record = torpor.Record("café", 0, 1_000, None, 1, False, 42, data={"team": "blue"})
    conn = _raw(path)
    conn.executescript(_V1)
    conn.execute(
        "INSERT INTO torpor_sessions (rowid, id, blob, last_accessed, hibernated, "
        "incarnation, version, inflated) VALUES (7, 'café', ?, 1000, 0, 42, 1, 0)",
        (record.blob,),
    )
    conn.execute(
        "INSERT INTO torpor_mail (session, incarnation, lane, body) VALUES (7, 42, 1, ?)",
        (b"\xa5hello",),  # msgpack of "hello", as the manager encodes messages
    )
    conn.close()

    with _open(path, torpor.ManualClock(2_000)) as mgr:
        expect_returns({"team": "blue"}, lambda: mgr.peek("café").data, what="peek('café')")  # type: ignore[union-attr]
        expect_returns(["hello"], mgr.receive, "café")
        mgr.create_index("team")
        expect_returns(["café"], lambda: [s.id for s in mgr.find(team="blue")], what="find")
    conn = _raw(path)
    names = [n for (n,) in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
    assert names == ["0001_initial", "0002_blob_ids", "0003_index_keys"]
    keys = conn.execute("SELECT idle_key, due_key FROM torpor_sessions").fetchall()
    assert keys == [(1_000, None)]  # the index keys start at the times they stand for
    kind = conn.execute("SELECT typeof(id) FROM torpor_sessions").fetchone()[0]
    assert kind == "blob"
    indexes = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"torpor_sessions_idle", "torpor_sessions_deadline", "torpor_sessions_id"} <= indexes


def test_a_file_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with _open(path):
        pass
    conn = _raw(path)
    conn.execute(
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
        "VALUES ('torpor.mnesia_like', '0099_future', 'x')"
    )
    conn.close()
    error = expect_raises(torpor.BackendUnavailable, create_backend, path=path)
    assert "newer torpor" in str(error)


def test_sweeps_and_the_priority_lane_read_their_indexes(tmp_path: Path) -> None:
    """What makes a priority receive independent of the normal backlog, and sweeps
    cost what they find: each query seeks its index (no SCAN of a table)."""
    conn = _raw(tmp_path / "s.db")
    with _open(tmp_path / "s.db"):
        pass
    plans = {
        "idle": IDLE_IDS,
        "expiry": EXPIRED_IDS,
        "expire step, same key": EXPIRE_SAME_KEY,
        "expire step, next keys": EXPIRE_NEXT_KEYS,
        "take": "SELECT seq FROM torpor_mail WHERE session = 1 AND incarnation = 2 "
        "ORDER BY lane, seq LIMIT 3",
        "walk": "SELECT id, blob FROM torpor_sessions WHERE id > x'00' ORDER BY id LIMIT 10",
    }
    for name, sql in plans.items():
        bound = {"bound": 5, "limit": 10, "key": 0, "rowid": 0}
        plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", bound))
        assert plan.startswith("SEARCH") and "INDEX" in plan, (name, plan)
        assert "TEMP B-TREE" not in plan, (name, plan)  # the index gives the order


# -- damaged rows ----------------------------------------------------------------------
def test_a_row_changed_behind_torpors_back_is_never_trusted(tmp_path: Path) -> None:
    """Its metadata columns survive but no longer match the blob: the ids walk decodes
    it (and skips it), the native sweep leaves it and reports it."""
    clock = torpor.ManualClock(1_000)
    backend = create_backend(path=tmp_path / "s.db")
    with torpor.open(backend, clock=clock, sweeper=False) as mgr:
        good = mgr.create({"x": 1}, session_id="good", timeout_ms=100)
        mgr.create({"x": 2}, session_id="bent", timeout_ms=100)
        backend.conformance_plant(b"bent", b"not a record any more")
        backend.conformance_plant(b"\xff-not-utf-8", b"junk")
        expect_returns(["good"], lambda: list(mgr.ids()), what="ids()")
        expect_returns(1, len, mgr)  # torpor_count: proved rows, nothing else
        expect_raises(torpor.SerializationError, mgr.get, "bent")
        clock.advance(1_000)
        steps = list(backend.torpor_expire(clock(), 10))
        assert [(list(s.removed), list(s.damaged)) for s in steps] == [
            ([("good", good.incarnation)], ["bent"])
        ]
        row = (
            backend.db.conn()
            .execute(
                f"SELECT {COLUMNS} FROM torpor_sessions WHERE id = ?",
                (b"bent",),
            )
            .fetchone()
        )
        assert row is not None and row[2] == b"not a record any more"


# -- contention ------------------------------------------------------------------------
def test_updates_from_threads_are_exact(tmp_path: Path) -> None:
    with _open(tmp_path / "s.db") as mgr:
        s = mgr.create({"n": 0})

        def bump() -> None:
            for _ in range(100):
                mgr.update(s.id, lambda d: {"n": d["n"] + 1})

        threads = [threading.Thread(target=bump) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        expect_returns({"n": 400}, lambda: mgr.peek(s.id).data, what="peek(id).data")  # type: ignore[union-attr]


def test_a_lock_held_too_long_is_a_typed_error_naming_the_contention(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with _open(path, busy_timeout_ms=20) as mgr:
        s = mgr.create({"n": 0})
        other = _raw(path)
        other.execute("BEGIN IMMEDIATE")  # another process's writer, holding the lock
        try:
            error = expect_raises(torpor.BackendUnavailable, mgr.update, s.id, lambda d: d)
            assert "write lock" in str(error) and "busy_timeout_ms=20" in str(error), error

            def in_tx() -> None:
                with mgr.transaction() as tx:
                    tx.get(s.id)

            expect_raises(torpor.TransactionConflict, in_tx)
        finally:
            other.execute("ROLLBACK")
            other.close()
        expect_returns({"n": 0}, lambda: mgr.peek(s.id).data, what="peek after")  # type: ignore[union-attr]


def _bump_in_process(path: str, sid: str, times: int) -> None:
    with torpor.open("mnesia_like", path=path, sweeper=False) as mgr:
        for _ in range(times):
            mgr.update(sid, lambda d: {"n": d["n"] + 1})


def test_updates_from_processes_are_exact(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with _open(path) as mgr:
        s = mgr.create({"n": 0}, timeout_ms=None)
    procs = [SPAWN.Process(target=_bump_in_process, args=(str(path), s.id, 200)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    with _open(path) as mgr:
        expect_returns({"n": 600}, lambda: mgr.peek(s.id).data, what="peek(id).data")  # type: ignore[union-attr]


def _send_in_process(path: str, sid: str, tag: str) -> None:
    with torpor.open("mnesia_like", path=path, sweeper=False) as mgr:
        for i in range(20):
            mgr.send(sid, f"{tag}-{i}")
        mgr.send(sid, f"{tag}-urgent", priority=True)


def test_messages_cross_processes_once_priority_first(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with _open(path) as mgr:
        s = mgr.create({}, timeout_ms=None)
        procs = [
            SPAWN.Process(target=_send_in_process, args=(str(path), s.id, tag)) for tag in "ab"
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
            assert p.exitcode == 0
        got = mgr.receive(s.id, max_messages=100)
    assert sorted(got[:2]) == ["a-urgent", "b-urgent"], got
    assert sorted(got[2:]) == sorted(f"{t}-{i}" for t in "ab" for i in range(20))
    for tag in "ab":  # each sender's normal messages in its order
        mine = [m for m in got[2:] if m.startswith(tag)]
        assert mine == [f"{tag}-{i}" for i in range(20)]


# -- multi-session transactions --------------------------------------------------------
def test_a_transaction_is_all_or_nothing_and_nests_as_savepoints(tmp_path: Path) -> None:
    with _open(tmp_path / "s.db") as mgr:
        a = mgr.create({"b": 100}, session_id="a")
        b = mgr.create({"b": 0}, session_id="b")

        def move(n: int) -> Any:
            def run(tx: torpor.Transaction) -> None:
                tx.update(a.id, lambda d: {"b": d["b"] - n})
                tx.update(b.id, lambda d: {"b": d["b"] + n})
                if n > 50:
                    raise ValueError("too much")

            return run

        mgr.transaction(move(30))
        expect_raises(ValueError, mgr.transaction, move(60))
        with mgr.transaction() as tx:
            tx.update(a.id, lambda d: {"b": d["b"] - 1})

            def undone(tx: torpor.Transaction) -> None:
                with tx.transaction() as inner:
                    inner.delete(b.id)
                    raise KeyError("undo the delete only")

            expect_raises(KeyError, undone, tx)
            tx.create({"b": 1}, session_id="c")
        balances = {sid: mgr.peek(sid).data["b"] for sid in "abc"}  # type: ignore[union-attr]
        assert balances == {"a": 69, "b": 30, "c": 1}


def test_a_transaction_removal_wakes_a_blocked_receiver(tmp_path: Path) -> None:
    from torpor.conformance.helpers import blocked_consumer

    with _open(tmp_path / "s.db") as mgr:
        s = mgr.create({})
        thread, raised = blocked_consumer(mgr, s.id, timeout=30)
        with mgr.transaction() as tx:
            tx.delete(s.id)
        thread.join(timeout=10)
        assert [type(e) for e in raised] == [torpor.SessionNotFound]


# -- housekeeping ----------------------------------------------------------------------
@pytest.mark.parametrize("storage", ["disc", "ram"])
def test_backup_writes_a_consistent_0600_copy(tmp_path: Path, storage: str) -> None:
    backend = create_backend(path=tmp_path / "s.db", storage=storage)
    with torpor.open(backend, sweeper=False) as mgr:
        ids = [mgr.create({"i": i}).id for i in range(30)]
        mgr.send(ids[0], "kept")
        target = tmp_path / "copy.db"
        backend.backup(target)
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        expect_raises(torpor.InvalidArgument, backend.backup, target)  # never overwritten
    with _open(target) as copy:
        expect_returns(sorted(ids), lambda: sorted(copy.ids()), what="ids() of the copy")
        expect_returns(["kept"], copy.receive, ids[0])


def test_the_sweeper_checkpoints_the_wal(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    backend = create_backend(path=path)
    with torpor.open(backend, sweeper=False) as mgr:
        for i in range(200):
            mgr.create({"pad": "x" * 1000, "i": i})
        wal = Path(f"{path}-wal")
        assert wal.stat().st_size > 0
        for _ in range(64):  # every 64th pass checkpoints
            backend.torpor_idle_ids(0, 1)
        assert wal.stat().st_size == 0


def test_close_closes_every_threads_connection(tmp_path: Path) -> None:
    backend = create_backend(path=tmp_path / "s.db")
    mgr = torpor.open(backend, sweeper=False)
    conns: list[sqlite3.Connection] = []

    def use() -> None:
        mgr.create({})
        conns.append(backend.db.conn())

    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    alive = backend.db.conn()
    mgr.close()
    with pytest.raises(sqlite3.ProgrammingError):
        alive.execute("SELECT 1")
    assert isinstance(backend, SqliteBackend)
    expect_raises(torpor.ManagerClosed, backend.torpor_fetch, "x")
    assert not os.path.exists(f"{tmp_path / 's.db'}-wal")  # the last connection cleaned up
