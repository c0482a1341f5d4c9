"""What the lmdb backend does to its files: commits per call, damaged stores, a map that
cannot grow."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import torpor

lmdb = pytest.importorskip("lmdb")
from torpor.plugins.lmdb import LmdbBackend, create_backend  # noqa: E402
from torpor.plugins.lmdb._index import entry_prefix  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _open(path: Path, **options: Any) -> tuple[torpor.Manager, LmdbBackend]:
    backend_options = {k: options.pop(k) for k in ("durability", "map_size") if k in options}
    backend = create_backend(path=str(path), **backend_options)
    options.setdefault("clock", torpor.ManualClock())
    return torpor.open(backend, sweeper=False, **options), backend


def _txnid(backend: LmdbBackend) -> int:
    return int(backend.shared.env.info()["last_txnid"])


def _digest(path: Path) -> str:
    return hashlib.sha256((path / "data.mdb").read_bytes()).hexdigest()


# -- commits -----------------------------------------------------------------------------
def test_a_delete_or_a_cancel_is_one_commit(tmp_path: Path) -> None:
    mgr, backend = _open(tmp_path / "env")
    with mgr:
        mgr.create_index("colour")
        for end in ("delete", "cancel"):
            s = mgr.create({"colour": "red"})
            mgr.send(s.id, "pending mail goes with it")
            before = _txnid(backend)
            assert getattr(mgr, end)(s.id)
            assert _txnid(backend) == before + 1, f"{end} took {_txnid(backend) - before} commits"
            assert mgr.find(colour="red") == []


def test_an_expiry_sweep_commits_once_per_batch(tmp_path: Path) -> None:
    clock = torpor.ManualClock()
    mgr, backend = _open(tmp_path / "env", clock=clock, sweep_batch_size=10)
    with mgr:
        for i in range(25):
            s = mgr.create({"i": i}, timeout_ms=1000)
            mgr.send(s.id, i)
        clock.advance(5000)
        before = _txnid(backend)
        assert mgr.cleanup_expired() == 25
        commits = _txnid(backend) - before
        assert commits <= math.ceil(25 / 10) + 1, f"{commits} commits for 25 sessions"
        assert len(mgr) == 0


def test_a_sweep_stopped_mid_batch_applies_none_of_that_batch(tmp_path: Path) -> None:
    # The stop flag is the one an urgent close raises.  Stopped anywhere, a pass leaves
    # whole batches (one transaction each) and reports exactly what it committed.
    clock = torpor.ManualClock()
    reported: list[int] = []

    class Hibernations:
        def torpor_event(self, event: torpor.LifecycleEvent) -> None:
            if event.kind is torpor.EventKind.HIBERNATED:
                reported.append(event.count)

    mgr, _ = _open(
        tmp_path / "env", clock=clock, sweep_batch_size=16, hibernate_after_ms=1000,
        plugins=[Hibernations()],
    )  # fmt: skip
    with mgr:
        for i in range(96):  # six full batches
            mgr.create({"i": i}, timeout_ms=None)
        clock.advance(5000)
        stalled = 0
        for calls in range(40):  # stop at every point of a pass's first batches
            checks = iter(range(calls, -1, -1))

            def stop(checks: Iterator[int] = checks) -> bool:
                return next(checks, 0) == 0

            before = mgr.stats().hibernated
            mgr.run_maintenance(stop)
            after = mgr.stats().hibernated
            assert after % 16 == 0, f"stopped at check {calls}: {after} hibernated"
            assert sum(reported) == after, f"stopped at check {calls}: reported {reported}"
            stalled += after == before < 96
        assert stalled and mgr.stats().hibernated == 96
    # What the pass reported is what is on disk.
    mgr, _ = _open(tmp_path / "env", clock=clock)
    with mgr:
        assert sum(1 for s in mgr.sessions() if s.hibernated) == sum(reported)


def test_cancellation_tombstones_are_pruned_by_age(tmp_path: Path) -> None:
    from torpor.plugins.lmdb import _store

    mgr, backend = _open(tmp_path / "env")
    dbs = backend._dbs

    def count(name: str) -> int:
        return int(backend.shared.read(lambda txn: txn.stat(getattr(dbs, name))["entries"]))

    with mgr:
        for _ in range(5):
            mgr.cancel(mgr.create({}).id)
        assert count("tombs") == count("tomb_ids") == 5
        old = _store.TOMBSTONE_TTL_NS
        _store.TOMBSTONE_TTL_NS = 0  # every tombstone is now old: the next cancel prunes
        try:
            mgr.cancel(mgr.create({}).id)
        finally:
            _store.TOMBSTONE_TTL_NS = old
        assert count("tombs") == count("tomb_ids") == 1
        mgr.delete(mgr.create({}).id)  # deletions need no tombstone
        assert count("tombs") == 1


# -- damaged stores ----------------------------------------------------------------------
def _populated(path: Path, n: int = 200, blob: int = 100) -> list[str]:
    mgr, _ = _open(path, durability="nosync")
    with mgr:
        mgr.create_index("i")
        return [mgr.create({"i": i, "pad": "x" * blob}, timeout_ms=None).id for i in range(n)]


def test_a_damaged_database_name_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "env"
    _populated(path)
    data = path / "data.mdb"
    raw = bytearray(data.read_bytes())
    name = b"torpor.sessions"
    at = raw.find(name)
    assert at >= 0
    while at >= 0:  # every copy (LMDB keeps old pages): the live key is one of them
        raw[at + len(name) - 1] = ord("r")  # "torpor.sessionr": still sorts in place
        at = raw.find(name, at + 1)
    data.write_bytes(bytes(raw))
    before = _digest(path)
    with pytest.raises(torpor.BackendUnavailable, match=r"'torpor\.sessions'"):
        torpor.open("lmdb", path=str(path), sweeper=False)
    assert _digest(path) == before  # no fresh, empty database was created
    with pytest.raises(torpor.BackendUnavailable, match="damaged"):  # and again
        torpor.open("lmdb", path=str(path), sweeper=False)


def test_a_store_from_a_newer_torpor_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "env"
    _populated(path, n=3)
    with lmdb.open(str(path), max_dbs=128) as env, env.begin(write=True) as txn:
        txn.put(b"torpor-layout:torpor", json.dumps({"layout": 99}).encode())
    with pytest.raises(torpor.ConfigError, match="newer torpor"):
        torpor.open("lmdb", path=str(path), sweeper=False)


def test_a_store_without_marker_from_torpor_0_1_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "env"
    ids = _populated(path, n=20)
    # Make it look like torpor 0.1 wrote it: no marker, 0.1's tombstone database, field
    # names as keys, index keys of another form, 25-byte metadata.
    with lmdb.open(str(path), max_dbs=128) as env, env.begin(write=True) as txn:
        assert txn.delete(b"torpor-layout:torpor")
        for name in (b"torpor.tombs", b"torpor.tomb_ids"):
            txn.drop(env.open_db(name, txn=txn), delete=True)
        env.open_db(b"torpor.cancels", txn=txn)
        fields = env.open_db(b"torpor.fields", txn=txn)
        txn.drop(fields, delete=False)
        txn.put(b"i", b"", db=fields)
        index = env.open_db(b"torpor.index", txn=txn)
        txn.drop(index, delete=False)
        txn.put(b"\x00" * 24 + ids[0].encode(), b"", db=index)  # a stale key of the old form
        meta = env.open_db(b"torpor.meta", txn=txn)
        for key, value in list(txn.cursor(db=meta).iternext()):
            txn.put(key, value[:25], db=meta)
    with torpor.open("lmdb", path=str(path), sweeper=False) as mgr:
        assert len(mgr) == 20
        assert [s.id for s in mgr.find(i=7)] == [ids[7]]
        mgr.send(ids[3], "hello")  # the incarnation comes from the record
        assert mgr.receive(ids[3]) == ["hello"]
        thread_free_cancel = mgr.cancel(ids[3])
        assert thread_free_cancel and ids[3] not in mgr
    with lmdb.open(str(path), max_dbs=128) as env, env.begin() as txn:
        marker = json.loads(txn.get(b"torpor-layout:torpor"))
        assert marker["layout"] == 1
        assert txn.get(b"torpor.cancels") is None


def test_a_partial_store_without_marker_is_damaged(tmp_path: Path) -> None:
    path = tmp_path / "env"
    _populated(path, n=3)
    with lmdb.open(str(path), max_dbs=128) as env, env.begin(write=True) as txn:
        txn.delete(b"torpor-layout:torpor")
        txn.drop(env.open_db(b"torpor.meta", txn=txn), delete=True)
    with pytest.raises(torpor.BackendUnavailable, match=r"'torpor\.meta'"):
        torpor.open("lmdb", path=str(path), sweeper=False)


_READ_ALL = textwrap.dedent(
    """
    import sys
    import torpor
    try:
        with torpor.open("lmdb", path=sys.argv[1], sweeper=False) as mgr:
            print("opened", sum(1 for _ in mgr.sessions()), flush=True)
    except torpor.TorporError as exc:
        print(type(exc).__name__, exc, flush=True)
    """
)


def test_a_truncated_data_file_is_refused_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "env"
    _populated(path, n=2000, blob=400)
    data = path / "data.mdb"
    size = data.stat().st_size
    with open(data, "r+b") as handle:
        handle.truncate(size // 2)
    child = subprocess.run(
        [sys.executable, "-c", _READ_ALL, str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert child.returncode == 0, f"the child died (signal {-child.returncode}): {child.stderr}"
    assert child.stdout.startswith("BackendUnavailable"), child.stdout
    assert "truncated" in child.stdout


# -- a map that cannot grow ----------------------------------------------------------------
_FILL_UNTIL_FULL = textwrap.dedent(
    """
    import resource, sys
    import torpor
    from torpor.plugins.lmdb import create_backend

    backend = create_backend(path=sys.argv[1], map_size=1 << 20, durability="nosync")
    mgr = torpor.open(backend, clock=torpor.ManualClock(), sweeper=False)
    first = mgr.create({"first": True}, timeout_ms=None).id

    def address_space():
        for line in open("/proc/self/status"):
            if line.startswith("VmSize"):
                return int(line.split()[1]) * 1024

    # Room for a few doublings of the map, not for many.
    resource.setrlimit(resource.RLIMIT_AS, (address_space() + (6 << 20), resource.RLIM_INFINITY))
    created = 1
    try:
        while created < 100_000:
            mgr.create({"blob": b"x" * 20_000}, timeout_ms=None)
            created += 1
        print("never failed", flush=True)
        sys.exit(1)
    except torpor.BackendUnavailable as exc:
        cause = type(exc.__cause__).__module__ + "." + type(exc.__cause__).__name__
        print("failed", created, cause, flush=True)
    except MemoryError:  # Python's own allocations hit the limit before the map did
        print("python ran out first", flush=True)
        sys.exit(0)
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert mgr.get(first) is not None  # reads still work
    small = mgr.create({"small": 1}, timeout_ms=None)  # so do writes that fit
    assert mgr.peek(small.id).data == {"small": 1}
    assert len(mgr) == created + 1
    mgr.close()
    print("usable", flush=True)
    """
)


def test_a_map_that_cannot_grow_fails_the_write_not_the_store(tmp_path: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", _FILL_UNTIL_FULL, str(tmp_path / "env")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert child.returncode == 0, child.stdout + child.stderr
    if child.stdout.startswith("python ran out first"):
        pytest.skip("this platform's allocator hit the address-space limit before LMDB did")
    lines = child.stdout.split("\n")
    assert lines[0].startswith("failed") and lines[0].endswith("lmdb.MemoryError"), lines
    assert lines[1] == "usable"
    # The store on disk is intact too.
    with torpor.open("lmdb", path=str(tmp_path / "env"), map_size=1 << 20, sweeper=False) as mgr:
        assert len(mgr) == int(lines[0].split()[1]) + 1


def test_engine_errors_inside_a_hook_are_translated(tmp_path: Path) -> None:
    mgr, backend = _open(tmp_path / "env")
    with mgr:
        s = mgr.create({})
        with pytest.raises(torpor.BackendUnavailable) as info:
            backend.shared.write(lambda txn: txn.put(b"x" * 600, b"", db=backend._dbs.sessions))
        assert isinstance(info.value.__cause__, lmdb.Error)
        assert mgr.get(s.id) is not None


def test_meta_records_the_incarnation(tmp_path: Path) -> None:
    mgr, backend = _open(tmp_path / "env")
    with mgr:
        s = mgr.create({}, session_id="s")
        raw = backend.shared.read(lambda txn: txn.get(b"s", db=backend._dbs.meta))
        assert struct.unpack_from(">QQQBQ", raw)[4] == s.incarnation


def test_huge_timeouts_and_times_do_not_overflow_the_indexes(tmp_path: Path) -> None:
    from torpor.plugins.lmdb._store import stamp

    assert stamp(2**70) == b"\xff" * 8 and stamp(-5) == b"\x00" * 8  # clamped, no error
    mgr, _ = _open(tmp_path / "env")
    with mgr:
        s = mgr.create({}, timeout_ms=2**62 - 1)  # about the longest the manager accepts
        assert mgr.get(s.id) is not None
        assert mgr.cleanup_expired() == 0
        assert mgr.delete(s.id)


@pytest.mark.parametrize(
    ("raised", "expected", "hint"),
    [
        (lmdb.ReadonlyError, torpor.BackendUnavailable, "read-only"),
        (lmdb.MemoryError, torpor.BackendUnavailable, "MemoryError"),
        (lmdb.ReadersFullError, torpor.BackendUnavailable, "max_readers"),
        (lmdb.DbsFullError, torpor.ConfigError, "max_dbs"),
        (lmdb.DiskError, torpor.BackendUnavailable, "DiskError"),
    ],
)
def test_every_lmdb_error_has_a_torpor_translation(
    raised: type[Exception], expected: type[Exception], hint: str
) -> None:
    from torpor.plugins.lmdb._env import translate

    error = translate(raised("engine message"))  # type: ignore[arg-type]
    assert type(error) is expected and hint in str(error)


def test_foreign_values_never_break_walks_sweeps_or_removal(tmp_path: Path) -> None:
    clock = torpor.ManualClock()
    mgr, backend = _open(tmp_path / "env", clock=clock)
    sessions = backend._dbs.sessions

    def plant(txn: Any) -> None:  # written straight into the database: no metadata
        txn.put(b"junk", b"not a torpor record", db=sessions)
        txn.put(b"\xff\xfe", b"TP\x02\x00\x93", db=sessions)  # not a UTF-8 key either

    with mgr:
        live = mgr.create({"colour": "red"}, timeout_ms=1000)
        idle = mgr.create({"colour": "blue"}, timeout_ms=None)
        backend.shared.write(plant)
        assert sorted(mgr.ids()) == sorted([live.id, idle.id])
        assert len(mgr) == 2
        assert mgr.stats().damaged == 2
        assert [s.id for s in mgr.find(colour="red")] == [live.id]  # a batched scan
        mgr.create_index("colour")
        assert [s.id for s in mgr.find(colour="blue")] == [idle.id]
        clock.advance(5000)
        assert mgr.hibernate_idle(1000) == 2
        assert mgr.cleanup_expired() == 1
        with pytest.raises(torpor.SerializationError, match="junk"):
            mgr.get("junk")
        assert mgr.cancel("junk")  # removed without decoding, without metadata
        assert "junk" not in mgr.list_utf8_ids()
        assert mgr.stats().damaged == 1
        assert mgr.stats().sessions == 1


def test_damaged_values_the_indexes_still_offer_never_stop_a_sweep(tmp_path: Path) -> None:
    # A failing disk garbles the oldest sessions' values; their index entries are intact,
    # so every sweep is offered them first: more of them than a batch holds.
    clock = torpor.ManualClock()
    mgr, backend = _open(tmp_path / "env", clock=clock, sweep_batch_size=4)
    sessions = backend._dbs.sessions
    with mgr:
        garbled = [mgr.create({}, session_id=f"old-{i}", timeout_ms=1000).id for i in range(10)]
        clock.advance(1)
        good = [mgr.create({}, session_id=f"new-{i}", timeout_ms=1000).id for i in range(6)]

        def garble(txn: Any) -> None:
            for sid in garbled:
                txn.put(sid.encode(), b"TP\x02\x00garbled", db=sessions)

        backend.shared.write(garble)
        clock.advance(500)
        assert mgr.hibernate_idle(100) == len(good)
        assert all(mgr.peek(sid).hibernated for sid in good)  # type: ignore[union-attr]
        clock.advance(1000)
        assert mgr.cleanup_expired() == len(good)
        assert list(mgr.ids()) == []
        assert mgr.stats().damaged == len(garbled)
        for sid in garbled:  # left alone: still there, still an error to read
            with pytest.raises(torpor.SerializationError, match=sid):
                mgr.peek(sid)


# -- foreign entries in the auxiliary databases ---------------------------------------------
_BLUE = entry_prefix("colour", "blue")  # where find(colour="blue") looks
_FOREIGN = {
    # case: (database, key, value) written by something else, or flipped on disk
    "fields": ("fields", b"\x00" * 16, b"\xff"),  # a field name that is not UTF-8
    "expiry": ("expiry", b"\x00" * 8 + b"\xff", b""),  # an id that is not UTF-8
    "idle": ("idle", b"\x00" * 8 + b"\xff", b""),
    "idle-short": ("idle", b"\x00\x00", b""),  # not even a time
    "expiry-no-id": ("expiry", b"\x00" * 8, b""),
    "counters": ("counters", b"mail_seq", b"\x01"),  # a counter of one byte
    "tombs": ("tombs", b"\x00", b""),  # shorter than any tombstone
    "entries": ("entries", b"s", b"\xff\xff\x00"),  # a length running past its end
    "index-no-id": ("index", _BLUE, b""),  # an index entry without its id
    "index-ghost": ("index", _BLUE + b"ghost", b""),  # pointing to no session
    "index-not-utf8": ("index", _BLUE + b"\xff", b""),
}


def _plant(path: Path, db: str, key: bytes, value: bytes) -> None:
    with lmdb.open(str(path), max_dbs=128) as env, env.begin(write=True) as txn:
        txn.put(key, value, db=env.open_db(f"torpor.{db}".encode(), txn=txn, create=False))


def _entries(path: Path, db: str) -> list[bytes]:
    with lmdb.open(str(path), max_dbs=128, readonly=True, lock=False) as env, env.begin() as txn:
        handle = env.open_db(f"torpor.{db}".encode(), txn=txn, create=False)
        return list(txn.cursor(db=handle).iternext(values=False))


@pytest.mark.parametrize("case", sorted(_FOREIGN))
def test_a_foreign_entry_in_an_auxiliary_database_breaks_nothing(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    db, key, value = _FOREIGN[case]
    path = tmp_path / "env"
    clock = torpor.ManualClock()
    mgr, _ = _open(path, clock=clock)
    with mgr:
        mgr.create_index("colour")
        s = mgr.create({"colour": "red"}, session_id="s", timeout_ms=10)
        mgr.send(s.id, "first")
        mgr.cancel(mgr.create({}).id)  # a tombstone to prune later
    _plant(path, db, key, value)
    mgr, _ = _open(path, clock=clock)
    with mgr, caplog.at_level(logging.WARNING, logger="torpor"):
        # Every operation works and raises nothing but torpor errors.
        other = mgr.create({"colour": "blue"}, timeout_ms=None)
        assert mgr.update(s.id, lambda d: {**d, "n": 1}).data == {"colour": "red", "n": 1}
        mgr.send(s.id, "second")
        assert mgr.receive(s.id, max_messages=10) == ["first", "second"]  # still FIFO
        assert [x.id for x in mgr.find(colour="blue")] == [other.id]
        clock.advance(5)
        assert mgr.hibernate_idle(1) == 2
        clock.advance(50)
        assert mgr.cleanup_expired() == 1
        assert mgr.cancel(other.id)
        mgr.create({})  # one more write after the sweeps
    if db in ("expiry", "idle", "index", "tombs"):  # entries that point nowhere: deleted
        assert key not in _entries(path, db)
    if db in ("fields", "expiry", "idle", "counters", "tombs"):  # logged
        assert any(f"torpor.{db}" in r.getMessage() for r in caplog.records), caplog.text


# -- stale entries in the time indexes ---------------------------------------------------
def test_stale_entries_in_front_of_the_time_indexes_are_deleted_by_the_sweeps(
    tmp_path: Path,
) -> None:
    path = tmp_path / "env"
    clock = torpor.ManualClock()
    mgr, _ = _open(path, clock=clock)
    with mgr:
        real = [mgr.create({"i": i}, timeout_ms=10).id for i in range(50)]
    # 1500 entries at the front of both indexes for sessions that do not exist: more
    # than a sweep batch, so a pass that stopped at them would never reach the others.
    with lmdb.open(str(path), max_dbs=128) as env, env.begin(write=True) as txn:
        for name in (b"torpor.expiry", b"torpor.idle"):
            db = env.open_db(name, txn=txn, create=False)
            for i in range(1500):
                txn.put(struct.pack(">Q", 0) + f"ghost{i:05d}".encode(), b"", db=db)
    clock.advance(10_000)
    mgr, backend = _open(path, clock=clock)

    def entries(db: Any) -> list[bytes]:
        return backend.shared.read(lambda txn: list(txn.cursor(db=db).iternext(values=False)))

    with mgr:
        assert mgr.cleanup_expired() == 50  # every really expired session
        assert entries(backend._dbs.expiry) == []  # and the stale entries are gone
        assert all(mgr.peek(sid) is None for sid in real)
        assert mgr.hibernate_idle(1) == 0  # only stale idle entries were left...
        assert entries(backend._dbs.idle) == []  # ...and that pass deleted them


def test_a_stale_entry_of_a_live_session_is_deleted_not_swept(tmp_path: Path) -> None:
    path = tmp_path / "env"
    clock = torpor.ManualClock()
    mgr, backend = _open(path, clock=clock)
    with mgr:
        s = mgr.create({}, session_id="s", timeout_ms=1_000_000)
        stale = struct.pack(">Q", 1) + b"s"  # an old expiry time of a live session
        backend.shared.write(lambda txn: txn.put(stale, b"", db=backend._dbs.expiry))
        clock.advance(10)
        assert mgr.cleanup_expired() == 0
        assert mgr.peek(s.id) is not None
        entries = backend.shared.read(
            lambda txn: list(txn.cursor(db=backend._dbs.expiry).iternext(values=False))
        )
        assert stale not in entries and len(entries) == 1  # its real entry stays


# -- data files LMDB would silently start afresh over ------------------------------------
@pytest.mark.parametrize("size", [0, 100, 4096])
@pytest.mark.parametrize("lock_file", [True, False])
def test_an_empty_or_cut_data_file_is_refused_not_overwritten(
    tmp_path: Path, size: int, lock_file: bool
) -> None:
    path = tmp_path / "env"
    _populated(path, n=20)
    os.truncate(path / "data.mdb", size)
    if not lock_file:
        (path / "lock.mdb").unlink()
    for _ in range(2):  # and again: nothing was written the first time
        with pytest.raises(torpor.BackendUnavailable, match="empty or cut short") as info:
            torpor.open("lmdb", path=str(path), sweeper=False)
        assert "move it" in str(info.value)
        assert (path / "data.mdb").stat().st_size == size
    (path / "data.mdb").unlink()  # a missing data file is a new store
    with torpor.open("lmdb", path=str(path), sweeper=False) as mgr:
        assert len(mgr) == 0


_OPEN_NEW = textwrap.dedent(
    """
    import sys
    import torpor
    with torpor.open("lmdb", path=sys.argv[1], sweeper=False) as mgr:
        mgr.create({}, timeout_ms=None)
    print("ok", flush=True)
    """
)


def test_processes_creating_one_new_store_together_all_open_it(tmp_path: Path) -> None:
    # A data file another process is creating right now is short for a moment: that
    # must not be taken for a damaged one.
    path = tmp_path / "env"
    command = [sys.executable, "-c", _OPEN_NEW, str(path)]
    pipe = subprocess.PIPE
    children = [
        subprocess.Popen(command, cwd=ROOT, stdout=pipe, stderr=pipe, text=True) for _ in range(6)
    ]
    results = [child.communicate(timeout=120) for child in children]
    assert all(out == "ok\n" for out, _ in results), results
    with torpor.open("lmdb", path=str(path), sweeper=False) as mgr:
        assert len(mgr) == 6


# -- namespaces with dots ----------------------------------------------------------------
@pytest.mark.parametrize(("first", "second"), [("app.v2", "app"), ("torpor.x", "torpor")])
def test_a_namespace_is_not_confused_with_a_longer_one(
    tmp_path: Path, first: str, second: str
) -> None:
    path = tmp_path / "env"
    with torpor.open("lmdb", path=str(path), namespace=first, sweeper=False) as a:
        a.create({"in": first})
        with torpor.open("lmdb", path=str(path), namespace=second, sweeper=False) as b:
            assert len(b) == 0
            b.create({"in": second})
        assert len(a) == 1
    with torpor.open("lmdb", path=str(path), namespace=second, sweeper=False) as b:
        assert [s.data for s in b.sessions()] == [{"in": second}]


# -- the reader table ----------------------------------------------------------------------
def test_more_reading_threads_than_reader_slots_wait_for_one(tmp_path: Path) -> None:
    backend = create_backend(path=str(tmp_path / "env"), max_readers=4)  # 2 per process
    mgr = torpor.open(backend, clock=torpor.ManualClock(), sweeper=False)
    with mgr:
        ids = [mgr.create({"i": i}, timeout_ms=None).id for i in range(40)]
        errors: list[BaseException] = []
        start = threading.Barrier(16)

        def read() -> None:
            start.wait()
            try:
                for _ in range(20):
                    assert sum(1 for _ in mgr.sessions(batch_size=5)) == 40
                    assert mgr.peek(ids[0]) is not None
            except BaseException as exc:  # handed to the test
                errors.append(exc)

        switch = sys.getswitchinterval()
        sys.setswitchinterval(1e-5)  # threads switch inside their read transactions
        try:
            threads = [threading.Thread(target=read) for _ in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(switch)
        assert not errors, errors[:3]


_HOLD_READERS = textwrap.dedent(
    """
    import sys
    import lmdb
    env = lmdb.open(sys.argv[1], max_dbs=128, max_readers=4)
    txns = [env.begin() for _ in range(4)]  # the whole reader table
    print("holding", flush=True)
    sys.stdin.readline()
    """
)


def test_a_reader_table_filled_by_another_process_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "env"
    mgr = torpor.open(create_backend(path=str(path), max_readers=4), sweeper=False)
    with mgr:
        s = mgr.create({}, timeout_ms=None)
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLD_READERS, str(path)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert holder.stdout.readline() == "holding\n"
            with pytest.raises(torpor.BackendUnavailable, match="max_readers"):
                mgr.peek(s.id)
            with pytest.raises(torpor.BackendUnavailable, match="max_readers"):
                list(mgr.ids())
        finally:
            holder.stdin.write("\n")
            holder.stdin.flush()
            holder.wait(30)
        assert mgr.peek(s.id) is not None  # slots free again: reads work
