"""Buffered touches (torpor._touches): a cold read on LMDB writes nothing, and no
session expires, hibernates or changes wrongly because its touch waited.

The LMDB environment's ``last_txnid`` counts write transactions: it is how these
tests see whether a read wrote.  A second manager on the same path has no buffer of
its own, so it sees the store as another process would.  Buffering needs the
sweeper (a flusher thread writes the touches once the oldest is half a resolution
old on the manager's clock), so the managers run one with its passes turned off;
the ManualClock only moves when a test moves it, so the flusher acts only where a
test lets it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import torpor
from torpor import _touches

RESOLUTION = 1000


def _open(path: Path, clock: torpor.ManualClock, **options: Any) -> torpor.Manager:
    options.setdefault("sweeper", True)
    options.setdefault("hibernate_after_ms", None)
    options.setdefault("cleanup_interval_ms", None)
    return torpor.open("lmdb", path=str(path), clock=clock, **options)


def _txnid(mgr: torpor.Manager) -> int:
    return int(mgr._b._backend.shared.env.info()["last_txnid"])  # type: ignore[attr-defined]


@pytest.fixture
def clock() -> torpor.ManualClock:
    return torpor.ManualClock()


def test_a_cold_read_writes_nothing_and_a_flush_writes_every_touch_in_one_commit(
    tmp_path: Path, clock: torpor.ManualClock
) -> None:
    with _open(tmp_path, clock) as mgr, _open(tmp_path, clock) as other:
        assert mgr.touch_resolution_ms == RESOLUTION
        ids = [mgr.create({"n": i}, timeout_ms=60_000).id for i in range(40)]
        created = clock()
        before = _txnid(mgr)
        clock.advance(999)
        assert all(mgr.get(sid) is not None for sid in ids)  # within the resolution
        clock.advance(1)
        read_at = clock()
        got = [mgr.get(sid) for sid in ids]  # cold: each one a buffered touch
        assert [s.last_accessed for s in got if s is not None] == [read_at] * 40
        assert _txnid(mgr) == before, "a read wrote"
        # This manager sees its reads at once; the store (another process) does not yet.
        assert all(mgr.peek(sid).last_accessed == read_at for sid in ids)  # type: ignore[union-attr]
        assert all(other.peek(sid).last_accessed == created for sid in ids)  # type: ignore[union-attr]
        assert mgr.flush() == 40
        assert _txnid(mgr) == before + 1  # 40 touches, one commit (sweep_batch_size 1000)
        assert all(other.peek(sid).last_accessed == read_at for sid in ids)  # type: ignore[union-attr]
        assert mgr.flush() == 0 and _txnid(mgr) == before + 1


def test_version_and_data_are_untouched_by_a_flush(
    tmp_path: Path, clock: torpor.ManualClock
) -> None:
    with _open(tmp_path, clock) as mgr:
        s = mgr.create({"k": ["v"]})
        clock.advance(RESOLUTION)
        mgr.get(s.id)
        assert mgr.flush() == 1
        after = mgr.peek(s.id)
        assert after is not None and after.data == {"k": ["v"]}
        assert (after.version, after.incarnation) == (s.version, s.incarnation)


@pytest.mark.parametrize(
    ("timeout", "hibernate_after", "idle", "buffered"),
    [
        (5000, None, 3999, True),  # 3999 + 1000 < 5000: stays alive until the flush
        (5000, None, 4000, False),  # would expire in the store before a flush: writes
        (None, 10_000, 8999, True),
        (None, 10_000, 9000, False),  # would look idle to a hibernation sweep: writes
    ],
)
def test_a_read_near_expiry_or_hibernation_writes_through(
    tmp_path: Path,
    clock: torpor.ManualClock,
    timeout: int | None,
    hibernate_after: int | None,
    idle: int,
    buffered: bool,
) -> None:
    with (
        _open(tmp_path, clock, hibernate_after_ms=hibernate_after) as mgr,
        _open(tmp_path, clock) as other,
    ):
        s = mgr.create({}, timeout_ms=timeout)
        before = _txnid(mgr)
        clock.advance(idle)
        assert mgr.get(s.id) is not None
        assert (_txnid(mgr) == before) is buffered
        stored = other.peek(s.id)
        assert stored is not None
        assert stored.last_accessed == (s.last_accessed if buffered else clock())


def test_overdue_touches_are_written_by_any_call(tmp_path: Path, clock: torpor.ManualClock) -> None:
    # The flusher is held up (here: stopped); a whole resolution later the next call of
    # any kind writes them before it runs.
    with _open(tmp_path, clock) as mgr, _open(tmp_path, clock) as other:
        a = mgr.create({})
        mgr._flusher.stop(urgent=True)  # type: ignore[union-attr]
        clock.advance(RESOLUTION)
        mgr.get(a.id)  # buffered at t
        first = clock()
        clock.advance(RESOLUTION - 1)
        assert mgr.peek(a.id) is not None
        assert other.peek(a.id).last_accessed == a.last_accessed  # type: ignore[union-attr]
        clock.advance(1)
        before = _txnid(mgr)
        assert len(mgr) == 1  # not a read of that session: any call
        assert _txnid(mgr) == before + 1
        assert other.peek(a.id).last_accessed == first  # type: ignore[union-attr]


def test_without_a_sweeper_reads_write_through(tmp_path: Path, clock: torpor.ManualClock) -> None:
    # Nothing would write buffered touches while the manager is quiet.
    with _open(tmp_path, clock, sweeper=False) as mgr:
        s = mgr.create({})
        clock.advance(RESOLUTION)
        before = _txnid(mgr)
        assert mgr.get(s.id).last_accessed == clock()  # type: ignore[union-attr]
        assert _txnid(mgr) == before + 1 and mgr._touches is None


def test_too_many_pending_touches_are_written_at_once(
    tmp_path: Path, clock: torpor.ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_touches, "_MAX_PENDING", 5)
    with _open(tmp_path, clock) as mgr:
        ids = [mgr.create({}).id for _ in range(6)]
        clock.advance(RESOLUTION)
        before = _txnid(mgr)
        for sid in ids[:5]:
            mgr.get(sid)
        assert _txnid(mgr) == before
        mgr.get(ids[5])
        assert _txnid(mgr) == before + 1 and len(mgr._touches) == 0  # type: ignore[arg-type]


def test_a_flush_never_reaches_another_incarnation(
    tmp_path: Path, clock: torpor.ManualClock
) -> None:
    with _open(tmp_path, clock) as mgr:
        old = mgr.create({"life": 1}, session_id="ünï")
        clock.advance(RESOLUTION)
        mgr.get(old.id)  # buffered for the first life
        assert mgr.delete(old.id)
        clock.advance(5)
        new = mgr.create({"life": 2}, session_id="ünï")
        assert mgr.flush() == 0
        again = mgr.peek("ünï")
        assert again is not None and again.incarnation == new.incarnation
        assert again.last_accessed == new.last_accessed and again.data == {"life": 2}


def test_a_flush_never_moves_last_accessed_back(tmp_path: Path, clock: torpor.ManualClock) -> None:
    with _open(tmp_path, clock) as mgr:
        s = mgr.create({})
        clock.advance(RESOLUTION)
        mgr.get(s.id)
        clock.advance(7)
        updated = mgr.update(s.id, lambda d: {**d, "x": 1})
        assert mgr.flush() == 0
        assert mgr.peek(s.id).last_accessed == updated.last_accessed == clock()  # type: ignore[union-attr]


def test_writes_keep_what_this_manager_read(tmp_path: Path, clock: torpor.ManualClock) -> None:
    # set_timeout keeps last_accessed: it must keep the buffered read, not the stored one.
    with _open(tmp_path, clock) as mgr, _open(tmp_path, clock) as other:
        s = mgr.create({}, timeout_ms=60_000)
        clock.advance(RESOLUTION)
        read_at = clock()
        mgr.get(s.id)
        assert mgr.set_timeout(s.id, 120_000)
        stored = other.peek(s.id)
        assert stored is not None and (stored.last_accessed, stored.timeout_ms) == (
            read_at,
            120_000,
        )


def test_a_damaged_record_is_passed_over_by_a_flush(
    tmp_path: Path, clock: torpor.ManualClock
) -> None:
    with _open(tmp_path, clock) as mgr:
        s, t = mgr.create({}), mgr.create({})
        clock.advance(RESOLUTION)
        mgr.get(s.id)
        mgr.get(t.id)
        mgr._b._backend.conformance_plant(s.id.encode(), b"not a record")  # type: ignore[attr-defined]
        assert mgr.flush() == 1  # t only; s is neither rewritten nor an error
        with pytest.raises(torpor.errors.SerializationError):
            mgr.peek(s.id)
        assert mgr.peek(t.id).last_accessed == clock()  # type: ignore[union-attr]


def test_sweeps_of_this_manager_count_its_reads(tmp_path: Path, clock: torpor.ManualClock) -> None:
    with _open(tmp_path, clock) as mgr:
        s = mgr.create({}, timeout_ms=10_000)
        clock.advance(5000)
        mgr.get(s.id)  # buffered (5000 + 1000 < 10000)
        clock.advance(6000)  # 11000 after the stored access, 6000 after the read
        assert mgr.cleanup_expired() == 0
        assert mgr.hibernate_idle(8000) == 0  # idle 6000 by the read, 11000 stored
        assert mgr.hibernate_idle(5000) == 1


def test_orderly_close_writes_the_touches_and_urgent_close_drops_them(
    tmp_path: Path, clock: torpor.ManualClock
) -> None:
    for urgent in (False, True):
        path = tmp_path / str(urgent)
        with _open(path, clock) as mgr:
            s = mgr.create({})
        clock.advance(RESOLUTION)
        mgr = _open(path, clock)
        mgr.get(s.id)
        mgr.close(urgent=urgent)
        with _open(path, clock) as again:
            stored = again.peek(s.id)
            assert stored is not None
            assert stored.last_accessed == (s.last_accessed if urgent else clock())


def test_the_flusher_writes_them_on_its_own(tmp_path: Path, clock: torpor.ManualClock) -> None:
    with _open(tmp_path, clock) as mgr, _open(tmp_path, clock) as other:
        flusher = mgr._flusher
        assert flusher is not None and flusher.jobs == {"touches": RESOLUTION / 2000}
        s = mgr.create({})
        clock.advance(RESOLUTION)
        read_at = clock()
        mgr.get(s.id)
        clock.advance(RESOLUTION // 2)  # the oldest is an interval old: due
        passes = flusher.passes
        flusher.kick()
        assert flusher.wait_for_pass(passes)
        assert other.peek(s.id).last_accessed == read_at  # type: ignore[union-attr]


def test_exact_touches_when_the_resolution_is_zero(
    tmp_path: Path, clock: torpor.ManualClock
) -> None:
    with _open(tmp_path, clock, touch_resolution_ms=0) as exact:
        s = exact.create({})
        before = _txnid(exact)
        clock.advance(1)
        assert exact.get(s.id).last_accessed == clock()  # type: ignore[union-attr]
        assert _txnid(exact) == before + 1 and exact._touches is None
        assert exact.touch(s.id)  # an explicit touch always writes
        assert _txnid(exact) == before + 2


def test_reads_racing_flushes_and_updates_lose_nothing(
    tmp_path: Path, clock: torpor.ManualClock
) -> None:
    # Readers buffer touches while a flusher writes them and writers update: at the end
    # every update is there once, and last_accessed is the latest read or write.
    with _open(tmp_path, clock) as mgr:
        ids = [mgr.create({"n": 0}).id for _ in range(8)]
        stop = threading.Event()
        errors: list[BaseException] = []

        def run(body: Any) -> None:
            try:
                while not stop.is_set():
                    body()
            except BaseException as exc:  # reported below
                errors.append(exc)

        def read() -> None:
            clock.advance(RESOLUTION)
            for sid in ids:
                mgr.get(sid)

        threads = [
            threading.Thread(target=run, args=(read,)),
            threading.Thread(target=run, args=(mgr.flush,)),
        ]
        for thread in threads:
            thread.start()
        try:
            for _ in range(25):
                for sid in ids:
                    mgr.update(sid, lambda d: {"n": d["n"] + 1})
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert not errors
        mgr.flush()
        for sid in ids:
            s = mgr.peek(sid)
            assert s is not None and s.data == {"n": 25}
            assert s.last_accessed <= clock()
