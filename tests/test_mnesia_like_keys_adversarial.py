"""Adversarial tests of mnesia_like's lagging index keys (``_rows.py``, "Index keys";
migration ``0003_index_keys``), written to make a wrong implementation fail.

The bargain the keys make: ``idle_key`` and ``due_key`` may lag ``last_accessed`` and
``deadline`` by a slack but are never ahead of them, and every sweep seeks by key and
decides by the exact column, so it answers what a full scan of the exact columns
answers, at the millisecond before and after each threshold, for rows written by
every path (create, a new incarnation, update, save, touch, buffered touches,
set_timeout, hibernate, wake, multi-session transactions and their savepoints,
cancel, delete), by managers with different slacks (in this process and another),
in a file migrated from schema 0002, next to foreign and damaged rows, and in every
storage mode; and a sweep's work follows what it finds (plus the sessions within a
slack of its threshold), not the store.

The oracle is a full scan (``NOT INDEXED``) of the exact columns.  Work is counted in
SQLite VM steps (a progress handler called at every instruction of this thread's
connection), which do not depend on the machine's speed.  Three of these tests found
bugs, since fixed: rows written by a process that predates the keys were hidden from
the sweeps (now keyed by triggers), a hibernation pass read the slack window once per
batch (the manager now asks an index for several batches per call), and the native
sweep read the damaged rows sharing a due_key again at every step (now two seeks).
"""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlite_utils import Database as Utils

import torpor
from torpor.plugins.mnesia_like import SqliteBackend, create_backend
from torpor.plugins.mnesia_like._backend import due_rows
from torpor.plugins.mnesia_like._rows import MAX_SLACK_MS
from torpor.plugins.mnesia_like._schema import MIGRATIONS, NAMES

T = TypeVar("T")
SPAWN = multiprocessing.get_context("spawn")
HIBERNATE_AFTER = 800  # idle slack: 100 ms
IDLE_SLACK = HIBERNATE_AFTER // 8
TIMEOUT = 1_600  # due slack: 200 ms
DUE_SLACK = TIMEOUT // 8
WIDE_HIBERNATE_AFTER = 80_000  # another manager's idle slack: 10 s
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1
# The columns a torpor of schema 0002 wrote: everything but the two keys.
_OLD_COLUMNS = "blob, last_accessed, hibernated, deadline, incarnation, version, inflated, proof"


def _open(
    path: Path,
    clock: torpor.ManualClock,
    *,
    storage: str = "disc",
    hibernate_after_ms: int | None = HIBERNATE_AFTER,
    **options: Any,
) -> tuple[torpor.Manager, SqliteBackend]:
    backend = create_backend(path=path, storage=storage)
    options.setdefault("touch_resolution_ms", 0)
    options.setdefault("sweeper", False)
    options.setdefault("sweep_batch_size", 2)  # the sweeps page, even over a few sessions
    manager = torpor.open(
        backend,
        clock=clock,
        hibernate_after_ms=hibernate_after_ms,
        default_timeout_ms=TIMEOUT,
        **options,
    )
    return manager, backend


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# -- the oracle ------------------------------------------------------------------------
def _ids(conn: sqlite3.Connection, sql: str, *args: Any) -> set[str]:
    found = set()
    for (key,) in conn.execute(sql, args):
        try:
            found.add(bytes(key).decode("utf-8"))
        except UnicodeDecodeError:
            continue  # the sweeps give str ids only
    return found


def _exact_idle(conn: sqlite3.Connection, bound: int) -> set[str]:
    return _ids(
        conn,
        "SELECT id FROM torpor_sessions NOT INDEXED WHERE hibernated = 0 AND last_accessed < ?",
        bound,
    )


def _exact_due(conn: sqlite3.Connection, bound: int) -> set[str]:
    return _ids(conn, "SELECT id FROM torpor_sessions NOT INDEXED WHERE deadline < ?", bound)


def _everything(conn: sqlite3.Connection) -> set[str]:
    return _ids(conn, "SELECT id FROM torpor_sessions NOT INDEXED")


def _native_walk(conn: sqlite3.Connection, bound: int, limit: int) -> list[str]:
    """What the native sweep's steps meet at ``bound``, paged ``limit`` at a time as
    ``_expire_step`` pages (by due_key, then rowid), without removing anything."""
    after, met = (I64_MIN, -1), []
    while True:
        rows = due_rows(conn, bound, after, limit)
        met += [bytes(r[1]).decode("utf-8", "replace") for r in rows]
        if len(rows) < limit:
            return met
        after = (rows[-1][-1], rows[-1][0])


def _check_sweeps(backend: SqliteBackend, skip: frozenset[str] = frozenset()) -> None:
    """At the millisecond before, at and after every time and key a row holds, each
    sweep answers what a full scan of the exact columns answers (``skip``: rows whose
    keys were damaged on purpose, which a sweep may miss but must never invent)."""
    conn = backend.db.conn()
    values: set[int] = set()
    for row in conn.execute(
        "SELECT last_accessed, idle_key, deadline, due_key FROM torpor_sessions"
    ):
        values.update(v for v in row if v is not None)
    bounds = {min(max(v + d, I64_MIN), I64_MAX) for v in values for d in (-1, 0, 1)}
    for bound in sorted(bounds):
        idle, due = _exact_idle(conn, bound), _exact_due(conn, bound)
        found = backend.torpor_idle_ids(bound, 1 << 20)
        assert len(found) == len(set(found)), ("idle_ids repeats an id", bound)
        assert idle - skip <= set(found) <= idle, ("idle_ids", bound, found, idle)
        found = backend.torpor_expired_ids(bound, 1 << 20)
        assert len(found) == len(set(found)), ("expired_ids repeats an id", bound)
        assert due - skip <= set(found) <= due, ("expired_ids", bound, found, due)
        for limit in (1, 2):
            some = backend.torpor_idle_ids(bound, limit)  # limit counts after filtering
            assert set(some) <= idle and len(some) >= min(limit, len(idle - skip)), bound
            some = backend.torpor_expired_ids(bound, limit)
            assert set(some) <= due and len(some) >= min(limit, len(due - skip)), bound
            walked = _native_walk(conn, bound, limit)
            assert len(walked) == len(set(walked)), ("the native sweep meets a row twice", bound)
            assert due - skip <= set(walked) <= due, ("native sweep", bound, walked, due)


def _check_keys(
    backend: SqliteBackend, idle_slack: int | None, skip: frozenset[str] = frozenset()
) -> None:
    """Every key at most its time; less than a slack behind it (the writer's idle
    slack if one writer wrote them all; the record's due slack); a due_key iff a
    deadline."""
    rows = backend.db.conn().execute(
        "SELECT id, last_accessed, idle_key, deadline, due_key FROM torpor_sessions "
        "WHERE last_accessed IS NOT NULL"
    )
    for key, accessed, idle_key, deadline, due_key in rows:
        sid = bytes(key).decode("utf-8", "replace")
        if sid in skip:
            continue
        assert idle_key is not None and idle_key <= accessed, (sid, accessed, idle_key)
        if idle_slack is not None:
            assert accessed - idle_key < max(idle_slack, 1), (sid, accessed, idle_key)
        assert (due_key is None) == (deadline is None), (sid, deadline, due_key)
        if deadline is not None:
            slack = min((deadline - accessed) // 8, MAX_SLACK_MS)
            assert due_key <= deadline < due_key + max(slack, 1), (sid, deadline, due_key)


def _audit(backend: SqliteBackend, idle_slack: int | None = IDLE_SLACK) -> None:
    _check_keys(backend, idle_slack)
    _check_sweeps(backend)


def _row(backend: SqliteBackend, sid: str) -> tuple[Any, ...]:
    found = (
        backend.db.conn()
        .execute(
            "SELECT last_accessed, idle_key, deadline, due_key, hibernated FROM torpor_sessions "
            "WHERE id = ?",
            (sid.encode(),),
        )
        .fetchone()
    )
    assert found is not None, sid
    return tuple(found)


def _hibernate_exactly(mgr: torpor.Manager, backend: SqliteBackend, threshold: int) -> set[str]:
    """``hibernate_idle`` hibernates exactly what the exact columns call idle."""
    conn = backend.db.conn()
    idle = _exact_idle(conn, mgr.clock() - threshold)
    assert mgr.hibernate_idle(threshold) == len(idle), idle
    still = _exact_idle(conn, I64_MAX)
    assert not idle & still, ("left active", idle & still)
    return idle


def _expire_exactly(mgr: torpor.Manager, backend: SqliteBackend) -> set[str]:
    """``cleanup_expired`` removes exactly what the exact columns call due."""
    conn = backend.db.conn()
    due, stored = _exact_due(conn, mgr.clock()), _everything(conn)
    assert mgr.cleanup_expired() == len(due), due
    assert _everything(conn) == stored - due
    return due


# -- every write path ------------------------------------------------------------------
@pytest.mark.parametrize("storage", ["disc", "disc_only", "ram"])
def test_every_write_path_keeps_the_keys_honest_and_the_sweeps_exact(
    tmp_path: Path, storage: str
) -> None:
    clock = torpor.ManualClock(100_000)
    mgr, backend = _open(tmp_path / "s.db", clock, storage=storage)
    with mgr:
        t0 = clock()
        for sid, timeout in (("a", TIMEOUT), ("b", None), ("c", 7), ("d", 10**9), ("e", TIMEOUT)):
            mgr.create({"n": 0, "team": sid}, session_id=sid, timeout_ms=timeout)
        _audit(backend)
        assert _row(backend, "c")[2:4] == (t0 + 7, t0 + 7)  # slack 0: exact keys

        clock.advance(IDLE_SLACK - 1)  # inside both slacks: the keys stay
        mgr.update("a", lambda d: {**d, "n": 1})
        assert _row(backend, "a")[:4] == (clock(), t0, clock() + TIMEOUT, t0 + TIMEOUT)
        _audit(backend)
        clock.advance(1)  # a whole idle slack: the idle key moves, the due key not yet
        assert mgr.touch("a")
        assert _row(backend, "a")[:4] == (clock(), clock(), clock() + TIMEOUT, t0 + TIMEOUT)
        assert mgr.touch("b")
        assert not mgr.touch("c")  # expired at t0 + 8: removed, not touched
        _audit(backend)

        # save, and a stale copy's save, which must store nothing (keys included)
        copy = mgr.get("d")
        assert copy is not None
        clock.advance(30)
        saved = mgr.save(copy)
        before = _row(backend, "d")
        clock.advance(30)
        with pytest.raises(torpor.Conflict):
            mgr.save(copy)
        assert _row(backend, "d") == before
        assert saved.version == copy.version + 1
        _audit(backend)

        # set_timeout: longer, shorter (the due key must come back), None, and back
        for timeout in (50 * TIMEOUT, TIMEOUT // 4, None, TIMEOUT, 10**12, TIMEOUT):
            assert mgr.set_timeout("e", timeout)
            _audit(backend)
            accessed, _, deadline, due_key, _ = _row(backend, "e")
            assert due_key == deadline == (None if timeout is None else accessed + timeout)
        assert mgr.set_timeout("e", TIMEOUT + DUE_SLACK - 1)  # within the slack: kept
        assert _row(backend, "e")[2:4] == (t0 + TIMEOUT + DUE_SLACK - 1, t0 + TIMEOUT)
        _audit(backend)

        # hibernation at the millisecond before and after the threshold, then a wake
        last = _row(backend, "d")[0]  # the last one touched
        assert last > max(_row(backend, sid)[0] for sid in "abe")
        clock.set(last + HIBERNATE_AFTER)
        assert "a" in _hibernate_exactly(mgr, backend, HIBERNATE_AFTER)
        clock.advance(1)
        assert "d" in _hibernate_exactly(mgr, backend, HIBERNATE_AFTER)
        _audit(backend)
        assert mgr.get("a") is not None  # woken: back in the idle index, keyed honestly
        assert _row(backend, "a")[4] == 0
        _audit(backend)
        assert "a" not in backend.torpor_idle_ids(clock(), 10)
        assert "a" in backend.torpor_idle_ids(clock() + 1, 10)
        assert mgr.set_timeout("d", 2 * TIMEOUT)  # hibernated: stays out of the idle index
        assert _row(backend, "d")[4] == 1
        _audit(backend)

        # a multi-session transaction, with a nested savepoint rolled back
        clock.advance(IDLE_SLACK // 2)
        kept = {sid: _row(backend, sid) for sid in ("b", "d")}
        with mgr.transaction() as tx:
            tx.update("a", lambda d: {**d, "n": 2})
            tx.create({"n": 0}, session_id="f")
            with pytest.raises(RuntimeError, match="savepoint"):
                _write_then_fail(tx, clock, ("b", "d"))
        assert {sid: _row(backend, sid) for sid in ("b", "d")} == kept
        _audit(backend)
        kept = {sid: _row(backend, sid) for sid in ("a", "b", "d", "f")}
        with pytest.raises(RuntimeError, match="savepoint"), mgr.transaction() as tx:
            _write_then_fail(tx, clock, ("a", "f"))  # and the whole transaction too
        assert {sid: _row(backend, sid) for sid in ("a", "b", "d", "f")} == kept
        _audit(backend)

        # cancel, delete, create again under the same ids
        assert mgr.cancel("f") and mgr.delete("b")
        mgr.create({"n": 0}, session_id="b", timeout_ms=TIMEOUT)
        _audit(backend)

        # expiry at the millisecond before and after a deadline, then a new
        # incarnation over an expired session (its row kept, its keys the new ones)
        deadline = _row(backend, "b")[2]
        clock.set(deadline)
        _expire_exactly(mgr, backend)
        assert mgr.peek("b") is not None
        clock.advance(1)
        assert "b" in _expire_exactly(mgr, backend)
        # a new incarnation over an expired session that no sweep removed yet
        old = mgr.create({"n": 0}, session_id="g", timeout_ms=20)
        clock.advance(21)
        assert _row(backend, "g")[2:4] == (old.last_accessed + 20,) * 2
        new = mgr.create({"n": 1}, session_id="g", timeout_ms=10 * TIMEOUT)
        assert new.incarnation != old.incarnation
        # The old incarnation's idle key lags the new time by less than a slack: kept
        # (never ahead); the deadline moved far ahead: its key with it.
        now, deadline = clock(), clock() + 10 * TIMEOUT
        assert _row(backend, "g")[:4] == (now, old.last_accessed, deadline, deadline)
        _audit(backend)
        clock.advance(10 * TIMEOUT + 1)
        assert "g" in _expire_exactly(mgr, backend)
        _audit(backend)


def test_both_slacks_are_capped_at_a_minute(tmp_path: Path) -> None:
    """However long the thresholds, a key lags its time by less than MAX_SLACK_MS."""
    clock = torpor.ManualClock(1_000_000)
    mgr, backend = _open(tmp_path / "s.db", clock, hibernate_after_ms=10**9)
    with mgr:
        t0 = clock()
        sid = mgr.create({"n": 0}, timeout_ms=10**9).id
        clock.advance(MAX_SLACK_MS - 1)
        mgr.update(sid, lambda d: {**d, "n": 1})
        assert _row(backend, sid)[:4] == (clock(), t0, clock() + 10**9, t0 + 10**9)
        clock.advance(1)
        mgr.update(sid, lambda d: {**d, "n": 2})
        assert _row(backend, sid)[:4] == (clock(), clock(), clock() + 10**9, clock() + 10**9)
        _check_keys(backend, MAX_SLACK_MS)


def test_the_native_sweep_pages_by_key_where_keys_and_times_disagree_in_order(
    tmp_path: Path,
) -> None:
    """x keeps its key (it lags less than a slack) while its deadline passes y's:
    by key x comes first, by time y does.  A sweep that pages by the time of the
    last row it met (not by its key) steps over y."""
    clock = torpor.ManualClock(1_000_000)
    mgr, backend = _open(tmp_path / "s.db", clock)
    with mgr:
        t0 = clock()
        x = mgr.create({"n": 0}, timeout_ms=TIMEOUT).id
        clock.advance(DUE_SLACK // 2)
        y = mgr.create({"n": 0}, timeout_ms=TIMEOUT).id
        clock.advance(DUE_SLACK // 4)
        mgr.update(x, lambda d: {**d, "n": 1})
        (_, _, x_deadline, x_key, _), (_, _, y_deadline, y_key, _) = (
            _row(backend, x),
            _row(backend, y),
        )
        assert x_key == t0 + TIMEOUT < y_key == y_deadline < x_deadline
        _check_sweeps(backend)
        clock.set(x_deadline + 1)
        steps = list(backend.torpor_expire(clock(), 1))
        assert sorted(sid for s in steps for sid, _ in s.removed) == sorted([x, y])
        assert _everything(backend.db.conn()) == set()


def test_buffered_touches_flushed_in_a_batch_keep_the_keys_and_the_sweeps_exact(
    tmp_path: Path,
) -> None:
    """A flush writes a batch of touches through ``torpor_transact_batch``: each key
    stays while it lags less than a slack and moves otherwise, and the sweeps see
    the flushed times exactly."""
    clock = torpor.ManualClock(100_000)
    resolution = 1_000
    mgr, backend = _open(
        tmp_path / "s.db",
        clock,
        hibernate_after_ms=None,  # no passes of the sweeper; idle slack: the most
        touch_resolution_ms=resolution,
        sweeper=True,
        cleanup_interval_ms=None,
    )
    with mgr:
        assert mgr.touch_resolution_ms == resolution
        t0 = clock()
        ids = [mgr.create({"n": i}, timeout_ms=100 * TIMEOUT).id for i in range(6)]
        written = {sid: _row(backend, sid) for sid in ids}
        clock.advance(resolution)
        for sid in ids[:3]:
            assert mgr.get(sid) is not None  # buffered, not written
        assert {sid: _row(backend, sid) for sid in ids} == written
        assert mgr.flush() == 3
        for sid in ids[:3]:
            accessed, idle_key, deadline, due_key, _ = _row(backend, sid)
            assert (accessed, idle_key) == (t0 + resolution, t0)  # lags < 60 s: kept
            assert (deadline, due_key) == (t0 + resolution + 100 * TIMEOUT, t0 + 100 * TIMEOUT)
        _audit(backend, MAX_SLACK_MS)
        clock.set(t0 + MAX_SLACK_MS)
        for sid in ids[3:]:
            assert mgr.get(sid) is not None
        assert mgr.flush() == 3
        for sid in ids[3:]:  # lagged a whole slack: moved
            assert _row(backend, sid)[:2] == (clock(), clock())
        _audit(backend, MAX_SLACK_MS)
        # Idle since t0 + resolution: not at that cutoff, at the next millisecond.
        clock.set(t0 + resolution + 2 * MAX_SLACK_MS)
        assert _hibernate_exactly(mgr, backend, 2 * MAX_SLACK_MS) == set()
        clock.advance(1)
        assert _hibernate_exactly(mgr, backend, 2 * MAX_SLACK_MS) == set(ids[:3])


def _write_then_fail(
    tx: torpor.Transaction, clock: torpor.ManualClock, ids: tuple[str, ...]
) -> None:
    """Write ``ids`` late enough that every key moves, in a savepoint rolled back."""
    with tx.transaction():
        clock.advance(IDLE_SLACK + DUE_SLACK)
        for sid in ids:
            tx.update(sid, lambda d: {**d, "n": 9})
        raise RuntimeError("roll the savepoint back")


# -- several managers, several slacks ------------------------------------------------
def test_managers_with_different_slacks_on_one_file_sweep_exactly(tmp_path: Path) -> None:
    """A manager with a wide slack writes keys lagging up to 10 s; one with a narrow
    slack sweeps them (and the reverse): the keys are never ahead, whoever wrote."""
    clock = torpor.ManualClock(1_000_000)
    path = tmp_path / "s.db"
    wide, wide_backend = _open(path, clock, hibernate_after_ms=WIDE_HIBERNATE_AFTER)
    narrow, narrow_backend = _open(path, clock)
    with wide, narrow:
        t0 = clock()
        ids = [narrow.create({"n": i}, timeout_ms=None).id for i in range(4)]
        clock.advance(5_000)
        for sid in ids[:2]:
            wide.update(sid, lambda d: {**d, "n": -1})
        assert {_row(narrow_backend, sid)[1] for sid in ids[:2]} == {t0}  # kept by the wide
        clock.advance(IDLE_SLACK)
        narrow.update(ids[2], lambda d: d)  # the narrow moves its key at once
        assert _row(narrow_backend, ids[2])[1] == clock()
        for backend in (wide_backend, narrow_backend):
            _check_keys(backend, WIDE_HIBERNATE_AFTER // 8)
            _check_sweeps(backend)
        touched = t0 + 5_000
        clock.set(touched + HIBERNATE_AFTER)
        assert _hibernate_exactly(narrow, narrow_backend, HIBERNATE_AFTER) == {ids[3]}
        clock.advance(1)
        assert _hibernate_exactly(narrow, narrow_backend, HIBERNATE_AFTER) == set(ids[:2])
        clock.set(touched + IDLE_SLACK + WIDE_HIBERNATE_AFTER + 1)
        assert _hibernate_exactly(wide, wide_backend, WIDE_HIBERNATE_AFTER) == {ids[2]}


def _update_elsewhere(path: str, start: int, writes: list[tuple[int, str]]) -> None:
    """In another process: a manager with the wide slack updates ``writes`` (at, id)."""
    clock = torpor.ManualClock(start)
    mgr, _ = _open(Path(path), clock, hibernate_after_ms=WIDE_HIBERNATE_AFTER)
    with mgr:
        for at, sid in writes:
            clock.set(at)
            mgr.update(sid, lambda d: {**d, "n": d["n"] + 1})


def test_keys_written_by_another_process_with_another_slack_are_swept_exactly(
    tmp_path: Path,
) -> None:
    clock = torpor.ManualClock(1_000_000)
    path = tmp_path / "s.db"
    mgr, backend = _open(path, clock)
    with mgr:
        t0 = clock()
        ids = [mgr.create({"n": 0}, timeout_ms=TIMEOUT * 10).id for _ in range(6)]
        writes = [(t0 + 1_000 + 7 * i, sid) for i, sid in enumerate(ids[:4])]
        child = SPAWN.Process(target=_update_elsewhere, args=(str(path), t0, writes))
        child.start()
        child.join(timeout=120)
        assert child.exitcode == 0
        for at, sid in writes:  # the other process kept the keys: it ran with its slack
            accessed, idle_key, deadline, due_key, _ = _row(backend, sid)
            assert (accessed, idle_key, deadline, due_key) == (
                at,
                t0,
                at + TIMEOUT * 10,
                t0 + TIMEOUT * 10,
            )
        _check_keys(backend, WIDE_HIBERNATE_AFTER // 8)
        _check_sweeps(backend)
        for at, sid in writes:
            clock.set(at + HIBERNATE_AFTER)  # the millisecond before: not idle
            hibernated = _hibernate_exactly(mgr, backend, HIBERNATE_AFTER)
            assert sid not in hibernated
            clock.advance(1)
            assert sid in _hibernate_exactly(mgr, backend, HIBERNATE_AFTER)
        for at, sid in writes:
            clock.set(at + TIMEOUT * 10)
            assert sid not in _expire_exactly(mgr, backend)
            clock.advance(1)
            assert sid in _expire_exactly(mgr, backend)


# -- a file of schema 0002 -------------------------------------------------------------
def _copy_into_schema_2(source: Path, target: Path) -> None:
    """Build ``target`` with the migrations up to 0002 (the layout of a torpor before
    0003, its indexes on last_accessed and deadline) and copy ``source``'s rows into
    it, the keys left out: what a torpor of schema 0002 had written."""
    db = Utils(str(target))
    MIGRATIONS.apply(db, stop_before="0003_index_keys")
    db.close()
    conn = _raw(target)
    columns = {name for (_, name, *_r) in conn.execute("PRAGMA table_info(torpor_sessions)")}
    assert not {"idle_key", "due_key"} & columns
    conn.execute("ATTACH DATABASE ? AS src", (str(source),))
    conn.execute("BEGIN")
    conn.execute(
        f"INSERT INTO torpor_sessions(rowid, id, {_OLD_COLUMNS}) "
        f"SELECT rowid, id, {_OLD_COLUMNS} FROM src.torpor_sessions"
    )
    for table in ("torpor_mail", "torpor_fields", "torpor_entries", "torpor_meta"):
        conn.execute(f"INSERT INTO {table} SELECT * FROM src.{table}")
    conn.execute("COMMIT")
    conn.execute("DETACH DATABASE src")
    conn.close()


def _layout(conn: sqlite3.Connection) -> set[tuple[str, str, str]]:
    return set(
        conn.execute(
            "SELECT type, name, sql FROM sqlite_master "
            "WHERE name LIKE 'torpor%' AND sql IS NOT NULL"
        )
    )


def _contents(conn: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
    sessions = conn.execute(
        f"SELECT rowid, id, {_OLD_COLUMNS} FROM torpor_sessions ORDER BY rowid"
    ).fetchall()
    return sessions, conn.execute("SELECT * FROM torpor_mail ORDER BY seq").fetchall()


def test_a_file_of_schema_2_migrates_keeps_everything_and_sweeps_exactly(
    tmp_path: Path,
) -> None:
    clock = torpor.ManualClock(1_000_000)
    source = tmp_path / "new.db"
    mgr, _ = _open(source, clock)
    with mgr:
        mgr.create_index("team")
        t0 = clock()
        for sid, timeout in (("sleepy", TIMEOUT), ("live", TIMEOUT), ("forever", None)):
            mgr.create({"team": sid}, session_id=sid, timeout_ms=timeout)
        clock.advance(HIBERNATE_AFTER + 1)
        assert mgr.hibernate_idle() == 3
        mgr.get("live")  # woken
        mgr.create({"team": "short"}, session_id="short", timeout_ms=50)
        mgr.send("live", "hello")
        mgr.send("live", "urgent", priority=True)
        data = {s.id: s.data for s in mgr.sessions()}
    old = tmp_path / "old.db"
    _copy_into_schema_2(source, old)
    kept = _contents(_raw(source))

    mgr, backend = _open(old, clock)
    with mgr:
        conn = backend.db.conn()
        names = [n for (n,) in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
        assert names == list(NAMES)
        # The same layout as a file made now (so no index on last_accessed or deadline
        # is left for every write to rewrite), and every row and message as it was.
        assert _layout(conn) == _layout(_raw(source))
        assert _contents(conn) == kept
        for sid, (accessed, idle_key, deadline, due_key, _) in (
            (sid, _row(backend, sid)) for sid in ("sleepy", "live", "forever", "short")
        ):
            assert (idle_key, due_key) == (accessed, deadline), sid  # keys start at the times
        assert _row(backend, "sleepy")[4] == 1 and _row(backend, "live")[4] == 0
        assert {s.id: s.data for s in mgr.sessions()} == data
        assert mgr.receive("live", max_messages=5) == ["urgent", "hello"]
        assert [s.id for s in mgr.find(team="forever")] == ["forever"]
        _audit(backend)
        live = _row(backend, "live")[0]
        assert live + HIBERNATE_AFTER == t0 + TIMEOUT + 1  # the times line up so:
        clock.set(t0 + TIMEOUT)  # sleepy's deadline: alive; short's long past
        assert _expire_exactly(mgr, backend) == {"short"}
        clock.advance(1)
        assert _expire_exactly(mgr, backend) == {"sleepy"}
        assert _hibernate_exactly(mgr, backend, HIBERNATE_AFTER) == set()  # live's cutoff
        clock.advance(1)
        assert _hibernate_exactly(mgr, backend, HIBERNATE_AFTER) == {"live"}
        assert mgr.get("forever") is not None  # woken after the migration: indexed again
        _audit(backend)
        assert backend.torpor_idle_ids(clock() + 1, 10) == ["forever"]


# -- foreign and damaged rows ----------------------------------------------------------
def test_damaged_keys_never_crash_a_sweep_nor_remove_a_live_session(tmp_path: Path) -> None:
    """NULL keys, keys ahead, keys far behind, rows of another program, and a row
    whose blob changed: every sweep keeps going, invents nothing, removes no live
    session, reports the damaged due row, and the next torpor write repairs a key."""
    clock = torpor.ManualClock(1_000_000)
    mgr, backend = _open(tmp_path / "s.db", clock)
    with mgr:
        t0 = clock()
        for sid in ("null", "ahead", "behind", "due-behind", "bent", "fine"):
            mgr.create({"n": 0}, session_id=sid, timeout_ms=TIMEOUT)
        backend.conformance_plant(b"\xff\xfe not utf-8", b"junk")
        backend.conformance_plant(b"foreign", b"not a record")
        backend.conformance_plant(b"bent", b"no longer a record")  # metadata kept
        conn = _raw(tmp_path / "s.db")
        conn.execute(
            "UPDATE torpor_sessions SET idle_key = NULL, due_key = NULL WHERE id = ?", (b"null",)
        )
        conn.execute(
            "UPDATE torpor_sessions SET idle_key = ?, due_key = ? WHERE id = ?",
            (I64_MAX, I64_MAX, b"ahead"),
        )
        conn.execute(
            "UPDATE torpor_sessions SET idle_key = ?, due_key = ? WHERE id IN (?, ?)",
            (I64_MIN, I64_MIN, b"behind", b"due-behind"),
        )
        conn.close()
        damaged_keys = frozenset({"null", "ahead"})
        _check_sweeps(backend, skip=damaged_keys)
        clock.advance(HIBERNATE_AFTER // 2)
        for sid in ("behind", "null", "ahead"):  # a torpor write repairs the keys
            mgr.update(sid, lambda d: {**d, "n": 1})
        _check_keys(backend, IDLE_SLACK, skip=frozenset({"bent", "due-behind"}))
        assert _row(backend, "behind")[1:4:2] == (clock(), clock() + TIMEOUT)

        # due-behind and fine are due, bent is due and damaged; the others are live
        clock.set(t0 + TIMEOUT + 1)
        steps = list(backend.torpor_expire(clock(), 2))
        assert sorted(sid for s in steps for sid, _ in s.removed) == ["due-behind", "fine"]
        assert [key for s in steps for key in s.damaged] == ["bent"]
        for sid in ("null", "ahead", "behind"):
            assert mgr.peek(sid) is not None, sid
        assert {"bent", "foreign"} <= _everything(backend.db.conn())
        clock.advance(HIBERNATE_AFTER)
        assert mgr.hibernate_idle() == 3
        _check_sweeps(backend)


def test_a_writer_that_predates_the_keys_is_not_hidden_from_the_sweeps(tmp_path: Path) -> None:
    clock = torpor.ManualClock(1_000_000)
    path = tmp_path / "s.db"
    mgr, backend = _open(path, clock)
    with mgr:
        t0 = clock()
        mgr.create({"n": 0}, session_id="shrunk", timeout_ms=TIMEOUT)
        # What the old process stores: the same columns a current torpor computes
        # (taken from a scratch file), written with schema 0002's statements.
        scratch, _ = _open(tmp_path / "scratch.db", torpor.ManualClock(t0))
        with scratch:
            scratch.create({"n": 0}, session_id="inserted", timeout_ms=50)
            scratch.create({"n": 0}, session_id="shrunk", timeout_ms=50)
        conn = _raw(path)
        conn.execute("ATTACH DATABASE ? AS src", (str(tmp_path / "scratch.db"),))
        conn.execute(
            f"INSERT INTO torpor_sessions(id, {_OLD_COLUMNS}) "
            f"SELECT id, {_OLD_COLUMNS} FROM src.torpor_sessions WHERE id = ?",
            (b"inserted",),
        )
        names = _OLD_COLUMNS.split(", ")
        sets = ", ".join(f"{c} = (SELECT {c} FROM src.torpor_sessions WHERE id = ?)" for c in names)
        conn.execute(
            f"UPDATE torpor_sessions SET {sets} WHERE id = ?",
            (*[b"shrunk"] * len(names), b"shrunk"),
        )
        conn.close()
        clock.advance(HIBERNATE_AFTER + 1)  # both expired (deadline t0 + 50) and idle
        assert {s for s in ("inserted", "shrunk") if mgr.peek(s) is None} == {"inserted", "shrunk"}
        assert _exact_due(backend.db.conn(), clock()) == {"inserted", "shrunk"}
        assert mgr.cleanup_expired() == 2


# -- cost ------------------------------------------------------------------------------
@contextmanager
def _steps(backend: SqliteBackend) -> Iterator[list[int]]:
    """Count the SQLite VM instructions this thread's connection runs meanwhile."""
    counted = [0]

    def step() -> int:
        counted[0] += 1
        return 0

    conn = backend.db.conn()
    conn.set_progress_handler(step, 1)
    try:
        yield counted
    finally:
        conn.set_progress_handler(None, 1)


def _counted(backend: SqliteBackend, fn: Callable[[], T]) -> tuple[int, T]:
    with _steps(backend) as counted:
        result = fn()
    return counted[0], result


def _sweep_costs(path: Path, store: int, window: int) -> dict[str, int]:
    """VM steps of each sweep over a store of ``store`` recent sessions, 20 idle and
    due ones, and ``window`` sessions inside the slack (keys behind the cutoff, times
    past it)."""
    clock = torpor.ManualClock(1_000_000)
    mgr, backend = _open(path, clock)
    with mgr:
        with mgr.transaction() as tx:
            due = {tx.create({"n": i}).id for i in range(20)}
        clock.advance(100)
        with mgr.transaction() as tx:
            near = [tx.create({"n": i}).id for i in range(window)]
        clock.advance(IDLE_SLACK - 1)  # the window's keys stay behind
        with mgr.transaction() as tx:
            for sid in near:
                tx.update(sid, lambda d: d)
        clock.advance(1)
        with mgr.transaction() as tx:
            for i in range(store):
                tx.create({"n": i}, timeout_ms=2 * TIMEOUT)
        # The 20 are idle at the window's last access, and due at any time between
        # the window's due keys and its deadlines.
        idle_cutoff = 1_000_000 + 100 + IDLE_SLACK - 1
        clock.set(1_000_000 + 100 + TIMEOUT + DUE_SLACK // 4)
        if near:  # the window's due keys are behind the bound, its deadlines not
            _, _, deadline, due_key, _ = _row(backend, near[0])
            assert due_key < clock() <= deadline
        costs: dict[str, int] = {}
        costs["idle"], found = _counted(backend, lambda: backend.torpor_idle_ids(idle_cutoff, 1000))
        assert set(found) == due
        costs["expired"], found = _counted(
            backend, lambda: backend.torpor_expired_ids(clock(), 1000)
        )
        assert set(found) == due
        costs["expire"], steps = _counted(
            backend, lambda: list(backend.torpor_expire(clock(), 1000))
        )
        assert sum(s.count for s in steps) == len(due)
    return costs


def test_a_sweeps_work_follows_what_it_finds_not_the_store(tmp_path: Path) -> None:
    small = _sweep_costs(tmp_path / "small.db", 2_000, 0)
    large = _sweep_costs(tmp_path / "large.db", 20_000, 0)
    for sweep, cost in small.items():
        assert large[sweep] <= cost + 10, (sweep, small, large)  # a deeper b-tree, no more
    windowed = _sweep_costs(tmp_path / "window.db", 2_000, 500)
    for sweep in ("idle", "expired", "expire"):  # the window is read once, a few steps a row
        assert windowed[sweep] <= small[sweep] + 12 * 500, (sweep, small, windowed)


def _hibernation_pass_cost(path: Path, window: int, idle: int, batch: int) -> int:
    clock = torpor.ManualClock(1_000_000)
    mgr, backend = _open(path, clock, sweep_batch_size=batch)
    with mgr:
        with mgr.transaction() as tx:
            near = [tx.create({"n": i}, timeout_ms=None).id for i in range(window)]
        clock.advance(IDLE_SLACK // 2)
        with mgr.transaction() as tx:
            for i in range(idle):
                tx.create({"n": i}, timeout_ms=None)
        clock.advance(IDLE_SLACK // 2 - 1)  # the window is touched; its keys stay behind
        with mgr.transaction() as tx:
            for sid in near:
                tx.update(sid, lambda d: d)
        clock.set(1_000_000 + IDLE_SLACK // 2 + 1 + HIBERNATE_AFTER)
        cost, hibernated = _counted(backend, mgr.hibernate_idle)
        assert hibernated == idle
    return cost


def test_a_hibernation_pass_reads_the_slack_window_once_not_once_per_batch(
    tmp_path: Path,
) -> None:
    window, idle, batch = 400, 200, 10
    alone = _hibernation_pass_cost(tmp_path / "alone.db", 0, idle, batch)
    crowded = _hibernation_pass_cost(tmp_path / "crowded.db", window, idle, batch)
    assert crowded - alone <= 12 * (window + idle), (alone, crowded)


def _damaged_due_cost(path: Path, damaged: int, one_key: bool) -> int:
    clock = torpor.ManualClock(1_000_000)
    mgr, backend = _open(path, clock)
    with mgr:
        with mgr.transaction() as tx:
            ids = []
            for i in range(damaged):
                ids.append(tx.create({"n": i}).id)
                if not one_key:
                    clock.advance(1)
        for sid in ids:
            backend.conformance_plant(sid.encode(), b"damaged")
        clock.advance(TIMEOUT + 1)
        cost, steps = _counted(backend, lambda: list(backend.torpor_expire(clock(), 10)))
        assert sorted(k for s in steps for k in s.damaged) == sorted(ids)
    return cost


def test_the_native_sweep_pages_past_damaged_rows_that_share_a_due_key(tmp_path: Path) -> None:
    spread = _damaged_due_cost(tmp_path / "spread.db", 300, one_key=False)
    shared = _damaged_due_cost(tmp_path / "shared.db", 300, one_key=True)
    assert shared <= 2 * spread, (spread, shared)
