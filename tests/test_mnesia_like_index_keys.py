"""mnesia_like's index keys (``_rows.py``, "Index keys"): the idle and deadline
indexes are on keys that may lag ``last_accessed`` and ``deadline`` by a slack, so
most writes leave the indexes alone; the sweeps must still find exactly what the
exact columns say, at exactly the time they say it.

Each test checks both sides of that bargain: what the row's columns hold after a
write (a key kept, a key moved, never a key ahead of its time) and what the sweeps
answer at the last millisecond before and the first after.  A state machine drives
random writes and clock moves and compares every sweep with a full scan of the exact
columns (the oracle), and the key invariants on every row, after every step.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import torpor
from torpor.plugins.mnesia_like import SqliteBackend, create_backend
from torpor.plugins.mnesia_like._backend import due_rows
from torpor.plugins.mnesia_like._rows import MAX_SLACK_MS, UPDATES

HIBERNATE_AFTER = 800  # idle slack: 100 ms
TIMEOUT = 1_600  # due slack: 200 ms
IDLE_SLACK = HIBERNATE_AFTER // 8
DUE_SLACK = TIMEOUT // 8


def _open(
    path: Path, clock: torpor.ManualClock, **options: Any
) -> tuple[torpor.Manager, SqliteBackend]:
    backend = create_backend(path=path)
    manager = torpor.open(
        backend,
        clock=clock,
        sweeper=False,
        hibernate_after_ms=HIBERNATE_AFTER,
        default_timeout_ms=TIMEOUT,
        touch_resolution_ms=0,
        **options,
    )
    return manager, backend


def _row(backend: SqliteBackend, sid: str) -> dict[str, Any]:
    found = (
        backend.db.conn()
        .execute(
            "SELECT last_accessed, idle_key, deadline, due_key, hibernated "
            "FROM torpor_sessions WHERE id = ?",
            (sid.encode(),),
        )
        .fetchone()
    )
    assert found is not None, sid
    return dict(
        zip(("accessed", "idle_key", "deadline", "due_key", "hibernated"), found, strict=True)
    )


def test_a_key_kept_within_its_slack_never_brings_a_sweep_forward(tmp_path: Path) -> None:
    clock = torpor.ManualClock(1_000)
    mgr, backend = _open(tmp_path / "s.db", clock)
    with mgr:
        sid = mgr.create({"n": 0}).id
        clock.advance(IDLE_SLACK - 1)  # 1099: both keys still within their slack
        mgr.update(sid, lambda d: {**d, "n": 1})
        row = _row(backend, sid)
        assert row == {
            "accessed": 1_099,
            "idle_key": 1_000,
            "deadline": 1_099 + TIMEOUT,
            "due_key": 1_000 + TIMEOUT,
            "hibernated": 0,
        }
        # Idle: last_accessed < cutoff, so not at cutoff 1099, and at 1100.
        assert backend.torpor_idle_ids(1_099, 10) == []
        assert backend.torpor_idle_ids(1_100, 10) == [sid]
        # Expired: deadline < now, so not at now = deadline, and at deadline + 1.
        deadline = row["deadline"]
        assert backend.torpor_expired_ids(deadline, 10) == []
        assert list(backend.torpor_expire(deadline, 10)) == []
        assert _row(backend, sid)["accessed"] == 1_099  # the native sweep left it
        assert backend.torpor_expired_ids(deadline + 1, 10) == [sid]
        steps = list(backend.torpor_expire(deadline + 1, 10))
        assert [s.count for s in steps] == [1]


def test_a_key_moves_once_it_lags_a_whole_slack(tmp_path: Path) -> None:
    clock = torpor.ManualClock(1_000)
    mgr, backend = _open(tmp_path / "s.db", clock)
    with mgr:
        sid = mgr.create({"n": 0}).id
        clock.advance(IDLE_SLACK)  # 1100: the idle key lags a whole slack, the due key not
        mgr.update(sid, lambda d: {**d, "n": 1})
        row = _row(backend, sid)
        assert (row["idle_key"], row["due_key"]) == (1_100, 1_000 + TIMEOUT)
        clock.advance(DUE_SLACK)  # 1300: both lag a whole slack now
        mgr.update(sid, lambda d: {**d, "n": 2})
        row = _row(backend, sid)
        assert (row["idle_key"], row["due_key"]) == (1_300, 1_300 + TIMEOUT)


def test_a_shortened_timeout_brings_the_due_key_back_with_it(tmp_path: Path) -> None:
    """A key is never ahead of its time: a deadline moved earlier moves its key."""
    clock = torpor.ManualClock(1_000)
    mgr, backend = _open(tmp_path / "s.db", clock)
    with mgr:
        sid = mgr.create({"n": 0}).id
        clock.advance(10)
        assert mgr.set_timeout(sid, 50)
        row = _row(backend, sid)
        assert row["deadline"] == row["due_key"] <= 1_060
        clock.advance(row["deadline"] + 1 - clock())
        assert mgr.cleanup_expired() == 1
        assert mgr.peek(sid) is None


def test_a_session_that_never_expires_has_no_due_key(tmp_path: Path) -> None:
    clock = torpor.ManualClock(1_000)
    mgr, backend = _open(tmp_path / "s.db", clock)
    with mgr:
        sid = mgr.create({"n": 0}).id
        assert mgr.set_timeout(sid, None)
        assert (_row(backend, sid)["deadline"], _row(backend, sid)["due_key"]) == (None, None)
        assert mgr.set_timeout(sid, TIMEOUT)  # and back: keyed again, at its deadline
        row = _row(backend, sid)
        assert row["due_key"] == row["deadline"] == 1_000 + TIMEOUT


def test_hibernation_leaves_the_idle_index_and_a_wake_rejoins_it(tmp_path: Path) -> None:
    clock = torpor.ManualClock(1_000)
    mgr, backend = _open(tmp_path / "s.db", clock)
    with mgr:
        sid = mgr.create({"n": 0}).id
        clock.advance(HIBERNATE_AFTER + 1)
        assert mgr.hibernate_idle() == 1
        assert _row(backend, sid)["hibernated"] == 1
        assert backend.torpor_idle_ids(clock() + 10 * HIBERNATE_AFTER, 10) == []
        assert mgr.get(sid) is not None  # woken, touched at 1801
        row = _row(backend, sid)
        assert (row["hibernated"], row["idle_key"]) == (0, 1_801)
        assert backend.torpor_idle_ids(1_801, 10) == []
        assert backend.torpor_idle_ids(1_802, 10) == [sid]


def _index_pages(conn: sqlite3.Connection) -> dict[int, str]:
    return {
        int(page): name
        for name, page in conn.execute(
            "SELECT name, rootpage FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name = 'torpor_sessions'"
        )
    }


def _written_indexes(conn: sqlite3.Connection, sql: str) -> set[str]:
    """The indexes an UPDATE's own bytecode opens for writing (OpenWrite's p2 is the
    b-tree's root page).  EXPLAIN lists the statement's program, then its triggers'
    sub-programs (addresses start again at 0): only the first counts, the triggers
    run only when their WHEN holds (``_schema.py``: never for torpor's own writes)."""
    pages = _index_pages(conn)
    written, last = set(), -1
    for addr, opcode, _p1, p2, *_rest in conn.execute(f"EXPLAIN {sql}", [0] * sql.count("?")):
        if addr < last:
            break
        last = addr
        if opcode == "OpenWrite" and p2 in pages:
            written.add(pages[p2])
    return written


def test_an_update_writes_only_the_indexes_whose_keys_move(tmp_path: Path) -> None:
    """What the keys are for: SQLite rewrites an index entry whenever the UPDATE
    names one of its columns, whatever the value, so the common update (no key
    moves) must name none of them."""
    mgr, backend = _open(tmp_path / "s.db", torpor.ManualClock(1_000))
    with mgr:
        conn = backend.db.conn()
        assert _written_indexes(conn, UPDATES[0]) == set()
        assert _written_indexes(conn, UPDATES[1]) == {"torpor_sessions_idle"}  # hibernated
        assert _written_indexes(conn, UPDATES[2]) == {"torpor_sessions_idle"}
        assert _written_indexes(conn, UPDATES[4]) == {"torpor_sessions_deadline"}
        assert _written_indexes(conn, UPDATES[7]) == {
            "torpor_sessions_idle",
            "torpor_sessions_deadline",
        }


def test_the_slack_follows_the_thresholds_and_is_capped(tmp_path: Path) -> None:
    backend = create_backend(path=tmp_path / "s.db")
    assert backend.rows.idle_slack == 0  # before torpor_open: exact keys
    for after, slack in ((800, 100), (7, 0), (10**9, MAX_SLACK_MS), (None, MAX_SLACK_MS)):
        backend.rows.set_hibernate_after(after)
        assert backend.rows.idle_slack == slack, after
    backend.torpor_close(True)


# The oracle: full scans of the exact columns, no index key involved.
_IDLE = "SELECT id FROM torpor_sessions WHERE hibernated = 0 AND last_accessed < ?"
_DUE = "SELECT id FROM torpor_sessions WHERE deadline IS NOT NULL AND deadline < ?"
_HIBERNATED = "SELECT id FROM torpor_sessions WHERE hibernated = ?"
_ALL = "SELECT id FROM torpor_sessions WHERE rowid > ?"


class IndexKeys(RuleBasedStateMachine):
    """Random writes and clock moves; after every step each sweep answers what a full
    scan of the exact columns answers, and every key is at most its time and less
    than a slack behind it."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self._folder = tempfile.TemporaryDirectory(prefix="torpor-keys-")
        self.clock = torpor.ManualClock(10_000)
        self.mgr, self.backend = _open(Path(self._folder.name) / "s.db", self.clock)
        self.ids: list[str] = []

    def teardown(self) -> None:
        self.mgr.close()
        self._folder.cleanup()

    def _pick(self, data: st.DataObject) -> str | None:
        return data.draw(st.sampled_from(self.ids)) if self.ids else None

    @rule(timeout=st.one_of(st.none(), st.integers(1, 3 * TIMEOUT)))
    def create(self, timeout: int | None) -> None:
        self.ids.append(self.mgr.create({"n": 0}, timeout_ms=timeout).id)

    @rule(data=st.data())
    def update(self, data: st.DataObject) -> None:
        sid = self._pick(data)
        if sid is not None and self.mgr.peek(sid) is not None:
            self.mgr.update(sid, lambda d: {**d, "n": d.get("n", 0) + 1})

    @rule(data=st.data())
    def touch(self, data: st.DataObject) -> None:
        sid = self._pick(data)
        if sid is not None:
            self.mgr.touch(sid)

    @rule(data=st.data(), timeout=st.one_of(st.none(), st.integers(1, 3 * TIMEOUT)))
    def set_timeout(self, data: st.DataObject, timeout: int | None) -> None:
        sid = self._pick(data)
        if sid is not None:
            self.mgr.set_timeout(sid, timeout)

    # Mostly short steps: the interesting moments are within a slack of a key.
    @rule(ms=st.one_of(st.integers(0, DUE_SLACK), st.integers(0, TIMEOUT)))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms)

    def _exact(self, sql: str, bound: int) -> set[str]:
        conn = self.backend.db.conn()
        return {k.decode() for (k,) in conn.execute(sql, (bound,))}

    @rule()
    def hibernate(self) -> None:
        idle = self._exact(_IDLE, self.clock() - HIBERNATE_AFTER)
        assert self.mgr.hibernate_idle() == len(idle)
        assert self._exact(_HIBERNATED, 1) >= idle

    @rule()
    def expire(self) -> None:
        due = self._exact(_DUE, self.clock())
        stored = self._exact(_ALL, 0)
        assert self.mgr.cleanup_expired() == len(due)
        assert self._exact(_ALL, 0) == stored - due  # exactly the due ones went

    @invariant()
    def sweeps_answer_what_the_exact_columns_say(self) -> None:
        if not hasattr(self, "backend"):
            return
        now = self.clock()
        for cutoff in (now - HIBERNATE_AFTER, now - HIBERNATE_AFTER + IDLE_SLACK, now):
            exact = self._exact(_IDLE, cutoff)
            assert set(self.backend.torpor_idle_ids(cutoff, 10_000)) == exact, cutoff
        conn = self.backend.db.conn()
        for at in (now, now + DUE_SLACK, now + TIMEOUT):
            exact = self._exact(_DUE, at)
            assert set(self.backend.torpor_expired_ids(at, 10_000)) == exact, at
            # What the native sweep's step would take (read here, not run).
            step = {row[1].decode() for row in due_rows(conn, at, (-(1 << 63), -1), 10_000)}
            assert step == exact, at

    @invariant()
    def keys_are_never_ahead_and_lag_less_than_a_slack(self) -> None:
        if not hasattr(self, "backend"):
            return
        rows = self.backend.db.conn().execute(
            "SELECT last_accessed, idle_key, deadline, due_key, deadline - last_accessed "
            "FROM torpor_sessions"
        )
        for accessed, idle_key, deadline, due_key, timeout in rows:
            assert idle_key <= accessed < idle_key + max(IDLE_SLACK, 1)
            if deadline is None:
                assert due_key is None
            else:
                slack = min(timeout // 8, MAX_SLACK_MS)
                assert due_key <= deadline < due_key + max(slack, 1)


TestIndexKeys = IndexKeys.TestCase
TestIndexKeys.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("storage", ["disc_only", "ram"])
def test_other_modes_key_the_same_way(tmp_path: Path, storage: str) -> None:
    clock = torpor.ManualClock(1_000)
    backend = create_backend(path=tmp_path / "s.db", storage=storage)
    mgr = torpor.open(
        backend,
        clock=clock,
        sweeper=False,
        hibernate_after_ms=HIBERNATE_AFTER,
        touch_resolution_ms=0,
    )
    with mgr:
        sid = mgr.create({"n": 0}, timeout_ms=TIMEOUT).id
        clock.advance(IDLE_SLACK - 1)
        mgr.update(sid, lambda d: {**d, "n": 1})
        assert _row(backend, sid)["idle_key"] == 1_000
        assert backend.torpor_idle_ids(clock(), 10) == []
        assert backend.torpor_idle_ids(clock() + 1, 10) == [sid]
