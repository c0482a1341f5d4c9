"""Touch-only writes on lmdb (``_touch.py``): a flush of buffered touches writes the
metadata entry and the idle and expiry index entries, never the record, and every
reader goes by the entry only while its checksum vouches for the record."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import torpor
from tests import test_lmdb_walk as walk
from torpor import Record, codec
from torpor.plugins.lmdb import LmdbBackend, create_backend
from torpor.plugins.lmdb._meta import (
    FLAGS_AT,
    META,
    META_UNSUMMED,
    META_V01,
    TOUCHED,
    pack,
    parse,
    state_of,
)
from torpor.plugins.lmdb._store import stamp
from torpor.plugins.lmdb._touch import restamped, touch_entry

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 10_000
STEP = 2_000  # more than lmdb's touch resolution (1000 ms): each read's touch is buffered


def _open(
    path: Path, clock: torpor.ManualClock, **options: Any
) -> tuple[torpor.Manager, LmdbBackend]:
    """A manager that buffers touches (its flusher thread may write them first: the
    tests look at what is stored, not at who wrote it), with no sweeps of its own."""
    backend = create_backend(path=str(path), durability="nosync")
    options = {"hibernate_after_ms": None, "cleanup_interval_ms": None, **options}
    return torpor.open(backend, clock=clock, **options), backend


def _get(backend: LmdbBackend, db: str, key: bytes) -> bytes | None:
    found: bytes | None = backend.shared.read(
        lambda txn: txn.get(key, db=getattr(backend._dbs, db))
    )
    return found


def _poke(backend: LmdbBackend, db: str, key: bytes, change: Callable[[bytes], bytes]) -> None:
    """Change a stored value behind torpor's back, as a failing disk would."""

    def body(txn: Any) -> None:
        handle = getattr(backend._dbs, db)
        txn.put(key, change(txn.get(key, db=handle)), db=handle)

    backend.shared.write(body)


def _index(backend: LmdbBackend, which: str, key: bytes) -> list[bytes]:
    """The stamps of the ``idle`` or ``expiry`` entries of ``key``."""

    def body(txn: Any) -> list[bytes]:
        cursor = txn.cursor(db=getattr(backend._dbs, which))
        return [k[:8] for k in cursor.iternext(values=False) if k[8:] == key]

    found: list[bytes] = backend.shared.read(body)
    return found


def _touched(backend: LmdbBackend, key: bytes) -> bool:
    raw = _get(backend, "meta", key)
    return raw is not None and len(raw) == META.size and bool(raw[FLAGS_AT] & TOUCHED)


def _read_and_flush(mgr: torpor.Manager, *sids: str) -> None:
    for sid in sids:
        assert mgr.get(sid) is not None
    mgr.flush()


# -- the write --------------------------------------------------------------------------
def test_a_flush_writes_the_metadata_and_leaves_the_record_as_it_was(tmp_path: Path) -> None:
    clock = torpor.ManualClock()
    mgr, backend = _open(tmp_path / "env", clock)
    with mgr:
        s = mgr.create({"n": 1, "pad": "x" * 3000}, session_id="s", timeout_ms=TIMEOUT)
        before = _get(backend, "sessions", b"s")
        for _ in range(3):  # and again over a touched entry
            clock.advance(STEP)
            _read_and_flush(mgr, "s")
            assert _get(backend, "sessions", b"s") == before
            assert _touched(backend, b"s")
        now = clock()
        state = parse(_get(backend, "meta", b"s") or b"")
        assert state is not None and (state.accessed, state.expires) == (now, now + TIMEOUT)
        assert Record.from_blob(before or b"").last_accessed == s.last_accessed  # the old time


def test_every_reader_sees_the_touch_the_metadata_holds(tmp_path: Path) -> None:
    clock = torpor.ManualClock()
    mgr, backend = _open(tmp_path / "env", clock)
    with mgr:
        mgr.create_index("owner")
        mgr.create({"owner": "ada"}, session_id="s", timeout_ms=TIMEOUT)
        clock.advance(STEP)
        _read_and_flush(mgr, "s")
        assert _touched(backend, b"s")
        now = clock()
        clock.advance(1)  # below the resolution: the reads below write nothing
        peeked = mgr.peek("s")
        assert peeked is not None and peeked.last_accessed == now
        assert [x.last_accessed for x in mgr.sessions()] == [now]
        assert [x.last_accessed for x in mgr.find(owner="ada")] == [now]  # index candidates
        assert list(mgr.ids()) == ["s"]
        with torpor.open(
            create_backend(path=str(tmp_path / "env"), durability="nosync"),
            clock=clock,
            sweeper=False,
        ) as other:
            seen = other.peek("s")
            assert seen is not None and seen.last_accessed == now
        # The transaction's ``current`` carries it too: an update moves on from it.
        updated = mgr.update("s", lambda d: {**d, "n": 2})
        assert updated.last_accessed == now + 1 and updated.data == {"owner": "ada", "n": 2}
        assert not _touched(backend, b"s")  # a data write writes the record: time in it
        assert Record.from_blob(_get(backend, "sessions", b"s") or b"").last_accessed == now + 1


def test_another_process_sees_the_touch(tmp_path: Path) -> None:
    clock = torpor.ManualClock()
    mgr, backend = _open(tmp_path / "env", clock)
    with mgr:
        mgr.create({"n": 1}, session_id="s", timeout_ms=None)
        clock.advance(STEP)
        _read_and_flush(mgr, "s")
        assert _touched(backend, b"s")
        code = (
            "import sys, torpor\n"
            "with torpor.open('lmdb', path=sys.argv[1], sweeper=False) as m:\n"
            "    print(m.peek('s').last_accessed)\n"
        )
        child = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "env")],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert child.returncode == 0, child.stderr
        assert int(child.stdout) == clock()


def test_expiry_follows_the_touch(tmp_path: Path) -> None:
    clock = torpor.ManualClock()
    mgr, backend = _open(tmp_path / "env", clock)
    with mgr:
        created = mgr.create({}, session_id="s", timeout_ms=TIMEOUT).last_accessed
        clock.advance(STEP)
        _read_and_flush(mgr, "s")
        touched_at = clock()
        assert _touched(backend, b"s")
        assert _index(backend, "expiry", b"s") == [stamp(touched_at + TIMEOUT)]
        # Expired by the record's envelope, alive by the touch.
        clock.set(created + TIMEOUT + 1)
        assert mgr.cleanup_expired() == 0
        assert list(mgr.ids()) == ["s"] and len(mgr) == 1
        assert mgr.peek("s") is not None
        clock.set(touched_at + TIMEOUT + 1)
        assert list(mgr.ids()) == []
        assert mgr.cleanup_expired() == 1
        assert _get(backend, "sessions", b"s") is None
        assert _index(backend, "expiry", b"s") == [] and _index(backend, "idle", b"s") == []


def test_idleness_follows_the_touch(tmp_path: Path) -> None:
    clock = torpor.ManualClock()
    mgr, backend = _open(tmp_path / "env", clock)
    with mgr:
        created = mgr.create({"n": 1}, session_id="s", timeout_ms=None).last_accessed
        clock.advance(STEP)
        _read_and_flush(mgr, "s")
        touched_at = clock()
        assert _touched(backend, b"s")
        assert _index(backend, "idle", b"s") == [stamp(touched_at)]  # moved, not added
        assert _index(backend, "expiry", b"s") == []
        clock.advance(STEP)
        # Idle for one step by the touch, two by the envelope.
        assert mgr.hibernate_idle(3 * STEP // 2) == 0
        assert mgr.hibernate_idle(STEP // 2) == 1
        assert _index(backend, "idle", b"s") == []
        hibernated = mgr.peek("s")
        assert hibernated is not None and hibernated.hibernated
        assert hibernated.last_accessed == touched_at > created
        assert not _touched(backend, b"s")  # hibernation writes the record, time and all


def test_an_index_entry_at_the_envelopes_time_is_stale_and_never_undoes_the_touch(
    tmp_path: Path,
) -> None:
    clock = torpor.ManualClock()
    mgr, backend = _open(tmp_path / "env", clock)
    with mgr:
        created = mgr.create({"n": 1}, session_id="s", timeout_ms=None).last_accessed
        clock.advance(STEP)
        _read_and_flush(mgr, "s")
        touched_at = clock()
        assert _touched(backend, b"s")
        # An idle entry the envelope's time would call for (left by a crash of some
        # other program, say): the metadata vouches for the record, so it is stale.
        stale = stamp(created) + b"s"
        backend.shared.write(lambda txn: txn.put(stale, b"", db=backend._dbs.idle))
        assert mgr.hibernate_idle(STEP // 2) == 0  # meets it, skips it, deletes it
        assert _index(backend, "idle", b"s") == [stamp(touched_at)]
        assert _touched(backend, b"s")
        peeked = mgr.peek("s")
        assert peeked is not None and peeked.last_accessed == touched_at


def test_a_repair_noted_before_the_touch_keeps_it(tmp_path: Path) -> None:
    """A read that met damaged metadata notes a repair for the next write; if writes
    fixed it and a touch followed meanwhile, the repair must not take the record's
    older time back."""
    clock = torpor.ManualClock()
    mgr, backend = _open(tmp_path / "env", clock)
    with mgr:
        mgr.create({"n": 1}, session_id="s", timeout_ms=TIMEOUT)
        mgr.create({"n": 2}, session_id="t", timeout_ms=TIMEOUT)
        clock.advance(STEP)
        _read_and_flush(mgr, "s")
        assert _touched(backend, b"s")
        backend._store._note_repair(b"s")  # as that read did
        mgr.delete("t")  # a write: it tidies first
        assert not backend._store.pending_tidy()
        assert _touched(backend, b"s")
        assert _index(backend, "expiry", b"s") == [stamp(clock() + TIMEOUT)]
        peeked = mgr.peek("s")
        assert peeked is not None and peeked.last_accessed == clock()


def test_a_hibernated_record_is_touched_in_its_metadata_and_read_as_bytes(
    tmp_path: Path,
) -> None:
    """The manager wakes what it reads, but a store of a hibernated record with a later
    time is a touch too.  Readers get bytes for it, not a trusted ``Record``: whether
    its payload inflates within a manager's ``max_session_bytes`` is the manager's to
    check, and a manager with a lower limit skips it in both walks."""
    clock = torpor.ManualClock()
    path = tmp_path / "env"
    mgr, backend = _open(path, clock)
    with mgr:
        mgr.create({"pad": "x" * 20_000}, session_id="big", timeout_ms=None)
        clock.advance(STEP)
        assert mgr.hibernate_idle(STEP // 2) == 1
        before = _get(backend, "sessions", b"big")
        stored = Record.of(backend.torpor_fetch("big") or b"")
        clock.advance(STEP)
        backend.torpor_store(stored.touched(clock()))
        assert _get(backend, "sessions", b"big") == before and _touched(backend, b"big")
        value = backend.torpor_fetch("big")
        assert isinstance(value, bytes) and Record.of(value).last_accessed == clock()
        peeked = mgr.peek("big")
        assert peeked is not None and peeked.hibernated and peeked.last_accessed == clock()
        assert _index(backend, "idle", b"big") == []  # hibernated: not in the idle index
        with torpor.open(
            create_backend(path=str(path), durability="nosync"),
            clock=clock,
            sweeper=False,
            max_session_bytes=8192,
        ) as small:
            assert walk._agree(small) == []


# -- what the metadata cannot vouch for --------------------------------------------------
def _touched_once(
    tmp_path: Path, clock: torpor.ManualClock
) -> tuple[torpor.Manager, LmdbBackend, int]:
    """A store whose session ``s`` was touched once since it was created (returned:
    its creation time), the touch in its metadata alone."""
    mgr, backend = _open(tmp_path / "env", clock)
    created = mgr.create({"note": "aaaa"}, session_id="s", timeout_ms=None).last_accessed
    clock.advance(STEP)
    _read_and_flush(mgr, "s")
    assert _touched(backend, b"s")
    return mgr, backend, created


def test_a_record_changed_behind_torpors_back_is_never_restamped(tmp_path: Path) -> None:
    mgr, backend, created = _touched_once(tmp_path, torpor.ManualClock())
    with mgr:
        _poke(backend, "sessions", b"s", lambda b: b.replace(b"aaaa", b"aaab"))  # decodes
        for read in (mgr.peek("s"), *mgr.sessions()):
            assert read is not None and read.data == {"note": "aaab"}
            assert read.last_accessed == created  # the envelope decides
        assert list(mgr.ids()) == ["s"]


def test_a_damaged_entry_is_not_believed(tmp_path: Path) -> None:
    mgr, backend, created = _touched_once(tmp_path, torpor.ManualClock())
    with mgr:
        _poke(backend, "meta", b"s", lambda m: m[:-1] + bytes([m[-1] ^ 1]))  # its checksum
        peeked = mgr.peek("s")
        assert peeked is not None and peeked.last_accessed == created


def test_a_foreign_value_under_a_touched_entry_stays_damaged(tmp_path: Path) -> None:
    mgr, backend, _created = _touched_once(tmp_path, torpor.ManualClock())
    with mgr:
        backend.conformance_plant(b"s", b"not a torpor record")
        with pytest.raises(torpor.SerializationError, match="'s'"):
            mgr.get("s")
        assert list(mgr.ids()) == [] and mgr.stats().damaged == 1


def test_a_touch_of_a_record_the_entry_cannot_vouch_for_rewrites_it(tmp_path: Path) -> None:
    clock = torpor.ManualClock()
    mgr, backend, _created = _touched_once(tmp_path, clock)
    with mgr:
        _poke(backend, "sessions", b"s", lambda b: b.replace(b"aaaa", b"aaab"))
        before = _get(backend, "sessions", b"s")
        clock.advance(STEP)
        _read_and_flush(mgr, "s")
        after = _get(backend, "sessions", b"s")
        assert after != before  # written in full, as before touch-only writes
        assert Record.from_blob(after or b"").last_accessed == clock()
        assert not _touched(backend, b"s")


@pytest.mark.parametrize("size", [META_UNSUMMED.size, META_V01.size], ids=["unsummed", "v0.1"])
def test_an_entry_of_an_older_format_falls_back_to_writing_the_record(
    tmp_path: Path, size: int
) -> None:
    clock = torpor.ManualClock()
    mgr, backend = _open(tmp_path / "env", clock)
    with mgr:
        mgr.create({"n": 1}, session_id="s", timeout_ms=TIMEOUT)
        _poke(backend, "meta", b"s", lambda m: m[:size])
        before = _get(backend, "sessions", b"s")
        clock.advance(STEP)
        _read_and_flush(mgr, "s")
        after = _get(backend, "sessions", b"s")
        assert after != before and Record.from_blob(after or b"").last_accessed == clock()
        raw = _get(backend, "meta", b"s")
        assert raw is not None and len(raw) == META.size and not _touched(backend, b"s")
        clock.advance(STEP)  # the entry now vouches: the next touch is metadata only
        _read_and_flush(mgr, "s")
        assert _get(backend, "sessions", b"s") == after and _touched(backend, b"s")


@pytest.mark.parametrize("damage", [None, *walk.DAMAGE], ids=lambda d: str(d).replace(" ", "-"))
def test_walks_agree_on_a_touched_record_and_trust_the_touch_only_while_intact(
    tmp_path: Path, damage: str | None
) -> None:
    """The damage table of the ids walk, over a record whose touch is in its metadata
    alone: alive by the touch, expired by the record's envelope.  Whatever is damaged
    (the record or the entry), both walks go by the envelope."""
    clock = torpor.ManualClock()
    mgr, backend = walk._open(tmp_path / "env", clock)  # every read's touch written
    with mgr:
        for sid in walk.OTHERS:
            mgr.create({"sid": sid}, session_id=sid, timeout_ms=None)
        mgr.create({"note": "aaaa", "n": 1}, session_id="victim", timeout_ms=1000)
        clock.advance(500)
        assert mgr.get("victim") is not None
        assert _touched(backend, b"victim")
        if damage is not None:
            db, poke, _yielded = walk.DAMAGE[damage]
            walk._poke(backend, db, b"victim", poke)
        clock.advance(700)  # 1200 ms after the create, 700 after the touch
        alive = ["victim"] if damage is None else []
        assert walk._agree(mgr) == sorted(walk.OTHERS + alive)


# -- the two functions -----------------------------------------------------------------
PAYLOAD = codec.encode_data({"n": 1})


def _record(**changes: Any) -> Record:
    return Record("s", 100, 200, TIMEOUT, 3, False, 7, PAYLOAD)._replace(**changes)


def _entry(record: Record, blob: bytes, *, touched_at: int | None = None) -> bytes:
    state = state_of(record if touched_at is None else record.touched(touched_at))
    flags = state.flags | (0 if touched_at is None else TOUCHED)
    return pack(state._replace(flags=flags), blob, key=b"s")


def test_restamped_gives_the_touched_record_only_for_a_consistent_entry() -> None:
    record = _record()
    blob = record.blob
    assert restamped(b"s", blob, _entry(record, blob, touched_at=900)) == record.touched(900)
    assert restamped(b"s", blob, _entry(record, blob)) is blob  # nothing newer
    assert restamped(b"s", blob, None) is blob
    hibernated = _record(hibernated=True, payload=codec.compress(PAYLOAD))
    raw = _entry(hibernated, hibernated.blob, touched_at=900)
    assert restamped(b"s", hibernated.blob, raw) == hibernated.touched(900).blob  # bytes
    # Entries that vouch (a matching checksum) but do not describe the record.
    for other in (_record(version=4), _record(incarnation=8), _record(timeout_ms=None)):
        assert restamped(b"s", blob, _entry(other, blob, touched_at=900)) is blob
    assert restamped(b"t", blob, _entry(record, blob, touched_at=900)) is blob  # another key
    assert restamped(b"s", blob, _entry(record, blob, touched_at=150)) is blob  # older
    v1 = b"TP\x01" + blob[3:]  # not the current format: left to the manager to judge
    assert restamped(b"s", v1, _entry(record, v1, touched_at=900)) is v1


def test_touch_entry_takes_only_a_later_last_accessed() -> None:
    record = _record()
    blob = record.blob
    raw = _entry(record, blob)
    found = touch_entry(b"s", blob, raw, record.touched(900))
    assert found is not None
    state, entry = found
    assert (state.accessed, state.expires, state.flags & TOUCHED) == (900, 900 + TIMEOUT, TOUCHED)
    assert restamped(b"s", blob, entry) == record.touched(900)
    same = touch_entry(b"s", blob, raw, record)
    assert same is not None and not same[0].flags & TOUCHED
    for changed in (
        _record(payload=codec.encode_data({"n": 2}), last_accessed=900),
        _record(created_at=101, last_accessed=900),
        _record(timeout_ms=TIMEOUT + 1, last_accessed=900),
        _record(id="t", last_accessed=900),
        _record(last_accessed=199),  # back in time: the envelope cannot say it
    ):
        assert touch_entry(b"s", blob, raw, changed) is None, changed
    assert touch_entry(b"s", blob, raw[: META_UNSUMMED.size], record.touched(900)) is None
    assert touch_entry(b"t", blob, raw, record.touched(900)) is None  # another key
    assert touch_entry(b"s", blob + b"x", raw, record.touched(900)) is None  # no longer vouched
    assert touch_entry(b"s", None, raw, record.touched(900)) is None
