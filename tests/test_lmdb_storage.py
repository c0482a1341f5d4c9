"""What the lmdb backend does to its files: commits per call, damaged stores, a map that
cannot grow."""

from __future__ import annotations

import hashlib
import json
import math
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import torpor

lmdb = pytest.importorskip("lmdb")
from torpor.plugins.lmdb import LmdbBackend, create_backend  # noqa: E402

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
        assert struct.unpack(">QQQBQ", raw)[4] == s.incarnation


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
