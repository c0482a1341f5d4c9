"""lmdb's ids walk (``torpor_iterate_ids``, ``_walk.py``): it trusts a record only when
the checksum in its metadata matches, and otherwise decodes it as a walk of whole
records would.  So whatever is damaged, ``ids()`` must agree with ``sessions()``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

import torpor
from torpor import Record, codec
from torpor.conformance.helpers import busy_switching
from torpor.plugins.lmdb import LmdbBackend, create_backend
from torpor.plugins.lmdb._meta import META, META_UNSUMMED, META_V01
from torpor.plugins.lmdb._store import stamp

Poke = Callable[[bytes | None], bytes | None]


def _open(
    path: Path, clock: torpor.ManualClock | None = None, **options: Any
) -> tuple[torpor.Manager, LmdbBackend]:
    backend = create_backend(path=str(path), durability="nosync")
    mgr = torpor.open(
        backend,
        clock=clock or torpor.ManualClock(),
        sweeper=False,
        touch_resolution_ms=0,  # every touch written: what is stored is what is read
        **options,
    )
    return mgr, backend


def _poke(backend: LmdbBackend, db: str, key: bytes, change: Poke) -> None:
    """Replace (None: delete) the value under ``key`` in the sessions or meta database,
    behind torpor's back, as another program or a failing disk would."""

    def body(txn: Any) -> None:
        handle = getattr(backend._dbs, db)
        new = change(txn.get(key, db=handle))
        if new is None:
            txn.delete(key, db=handle)
        else:
            txn.put(key, new, db=handle)

    backend.shared.write(body)


def _stored(backend: LmdbBackend, db: str, key: bytes) -> bytes | None:
    found: bytes | None = backend.shared.read(
        lambda txn: txn.get(key, db=getattr(backend._dbs, db))
    )
    return found


def _agree(mgr: torpor.Manager) -> list[str]:
    """ids() at several batch sizes, checked against a walk of whole records."""
    whole = sorted(s.id for s in mgr.sessions(batch_size=2))
    for size in (1, 2, 3, 100):
        walked = list(mgr.ids(batch_size=size))
        assert len(walked) == len(set(walked)), f"ids(batch_size={size}) repeated an id"
        assert sorted(walked) == whole, f"ids(batch_size={size}) disagrees with sessions()"
    return whole


def _replace(blob: bytes | None, old: bytes, new: bytes) -> bytes:
    assert blob is not None and blob.count(old) == 1
    return blob.replace(old, new)


def _flip(raw: bytes | None, at: int) -> bytes:
    assert raw is not None
    return raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1 :]


OTHERS = [f"other-{i}" for i in range(5)]
PAYLOAD = codec.encode_data({"note": "aaaa", "n": 1})

# Each damage of the session "victim" (stored with PAYLOAD, timeout 1000 ms, read at
# t0 + 500) and whether a walk of whole records still yields it.
DAMAGE: dict[str, tuple[str, Poke, bool]] = {
    "payload no longer msgpack": (
        "sessions",
        lambda b: _replace(b, PAYLOAD, b"\xc1" + PAYLOAD[1:]),
        False,
    ),
    "payload changed, still decodes": ("sessions", lambda b: _replace(b, b"aaaa", b"aaab"), True),
    "envelope magic": ("sessions", lambda b: b"XP" + (b or b"")[2:], False),
    "cut short": ("sessions", lambda b: (b or b"")[:12], False),
    "another id's record": (
        "sessions",
        lambda b: Record("other-0", 0, 0, None, 1, False, 7, PAYLOAD).blob,
        False,
    ),
    "metadata removed": ("meta", lambda m: None, True),
    "metadata without checksum": ("meta", lambda m: (m or b"")[: META_UNSUMMED.size], True),
    "metadata of torpor 0.1": ("meta", lambda m: (m or b"")[: META_V01.size], True),
    "metadata byte flipped": ("meta", lambda m: _flip(m, 20), True),
    "checksum byte flipped": ("meta", lambda m: _flip(m, META.size - 1), True),
    "metadata short": ("meta", lambda m: b"\x01\x02", True),
    # Metadata that says the session lives far longer than its record does: the record
    # is expired by now (see the test), and the metadata is not believed.
    "metadata claims a later expiry": (
        "meta",
        lambda m: (m or b"")[:8] + stamp(2**62) + (m or b"")[16:],
        False,
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=lambda d: d.replace(" ", "-"))
def test_ids_skip_exactly_what_a_walk_of_whole_records_skips(tmp_path: Path, damage: str) -> None:
    clock = torpor.ManualClock()
    mgr, backend = _open(tmp_path / "env", clock)
    with mgr:
        for sid in OTHERS:
            mgr.create({"sid": sid}, session_id=sid, timeout_ms=None)
        victim = mgr.create({"note": "aaaa", "n": 1}, session_id="victim", timeout_ms=1000)
        assert victim.data == codec.decode_data(PAYLOAD)
        db, poke, still_yielded = DAMAGE[damage]
        if damage == "metadata claims a later expiry":
            clock.advance(1001)  # the record has expired; its metadata now says otherwise
            still_yielded = False
        _poke(backend, db, b"victim", poke)
        expected = sorted(OTHERS + (["victim"] if still_yielded else []))
        assert _agree(mgr) == expected


def test_planted_values_without_metadata_are_decoded_not_trusted(tmp_path: Path) -> None:
    mgr, backend = _open(tmp_path / "env")
    with mgr:
        mgr.create({}, session_id="real", timeout_ms=None)
        # Another program's values: a torpor record of its own key (intact: sessions()
        # yields it, so ids() must too), junk, and a key that is not UTF-8.
        backend.conformance_plant(
            b"planted", Record("planted", 0, 0, None, 1, False, 7, PAYLOAD).blob
        )
        backend.conformance_plant(b"junk", b"not a record")
        backend.conformance_plant(b"\xff\xfe", Record("x", 0, 0, None, 1, False, 7, PAYLOAD).blob)
        assert _stored(backend, "meta", b"planted") is None
        assert _agree(mgr) == ["planted", "real"]


def test_expiry_comes_from_checked_metadata(tmp_path: Path) -> None:
    clock = torpor.ManualClock()
    mgr, _ = _open(tmp_path / "env", clock)
    with mgr:
        mgr.create({}, session_id="short", timeout_ms=1000)
        mgr.create({}, session_id="long", timeout_ms=5000)
        mgr.create({}, session_id="forever", timeout_ms=None)
        clock.advance(1000)  # exactly the timeout: still alive (expired is strictly more)
        assert _agree(mgr) == ["forever", "long", "short"]
        clock.advance(1)
        assert _agree(mgr) == ["forever", "long"]
        clock.advance(4000)
        assert _agree(mgr) == ["forever"]


def test_expiry_clamped_at_zero_is_decided_by_the_record(tmp_path: Path) -> None:
    # A clock before the epoch: last_accessed + timeout < 0 is stored clamped to 0, which
    # cannot tell expired from alive, so the walk decodes those records.
    clock = torpor.ManualClock(start_ms=-10_000)
    mgr, _ = _open(tmp_path / "env", clock)
    with mgr:
        mgr.create({}, session_id="s", timeout_ms=5000)
        clock.advance(4000)
        assert _agree(mgr) == ["s"]
        clock.advance(1001)
        assert _agree(mgr) == []


def test_hibernated_records_too_large_for_this_manager_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "env"
    writer, _ = _open(path)
    with writer:
        writer.create({"pad": "x" * 20_000}, session_id="big", timeout_ms=None)
        writer.create({"pad": "x" * 100}, session_id="small", timeout_ms=None)
        writer.clock.advance(10)  # type: ignore[attr-defined]
        assert writer.hibernate_idle(1) == 2
        assert _agree(writer) == ["big", "small"]
        # A manager with a smaller limit on the same store: the big one would inflate
        # past it, so decoding it fails, and ids() must not trust it either.
        reader, _ = _open(path, max_session_bytes=8192)
        with reader:
            assert _agree(reader) == ["small"]


def test_metadata_without_checksum_gets_one_on_the_next_write(tmp_path: Path) -> None:
    clock = torpor.ManualClock()
    mgr, backend = _open(tmp_path / "env", clock)
    with mgr:
        ids = [mgr.create({"i": i}, session_id=f"s{i}", timeout_ms=None).id for i in range(4)]
        for sid in ids:  # as torpor 0.2.0.dev and 0.1 wrote them
            size = META_V01.size if sid == "s3" else META_UNSUMMED.size
            _poke(backend, "meta", sid.encode(), lambda m, n=size: (m or b"")[:n])
        assert _agree(mgr) == ids
        clock.advance(5)
        assert mgr.touch("s0")  # a touch: decoded once, then vouched for
        mgr.update("s1", lambda d: {**d, "x": 1})  # new data: vouched for
        sizes = {sid: len(_stored(backend, "meta", sid.encode()) or b"") for sid in ids}
        assert sizes == {"s0": META.size, "s1": META.size, "s2": META_UNSUMMED.size, "s3": 25}
        clock.advance(5)
        assert mgr.hibernate_idle(1) == 4  # hibernation: decoded once, then vouched for
        assert mgr.get("s3") is not None  # a wake
        sizes = {sid: len(_stored(backend, "meta", sid.encode()) or b"") for sid in ids}
        assert sizes == dict.fromkeys(ids, META.size)
        assert _agree(mgr) == ids


def test_a_store_of_a_damaged_record_does_not_vouch_for_it(tmp_path: Path) -> None:
    # A write that keeps the data (a buffered touch being flushed, say) of a record whose
    # payload was damaged after it was read: the store writes metadata without a
    # checksum, so walks keep decoding it (and skipping it).
    clock = torpor.ManualClock()
    mgr, backend = _open(tmp_path / "env", clock)
    with mgr:
        mgr.create({"note": "aaaa", "n": 1}, session_id="s", timeout_ms=None)
        _poke(backend, "sessions", b"s", lambda b: _replace(b, PAYLOAD, b"\xc1" + PAYLOAD[1:]))
        backend.torpor_transact("s", lambda current: Record.of(current, "s").touched(clock() + 5))
        assert len(_stored(backend, "meta", b"s") or b"") == META_UNSUMMED.size
        assert _agree(mgr) == []


@pytest.mark.parametrize("payload", [PAYLOAD, b"\xc1"], ids=["decodes", "damaged"])
def test_a_metadata_repair_vouches_only_for_data_it_decoded(tmp_path: Path, payload: bytes) -> None:
    mgr, backend = _open(tmp_path / "env")
    with mgr:
        blob = Record("s", 0, 0, None, 1, False, 7, payload).blob
        backend.conformance_plant(b"s", blob)
        _poke(backend, "meta", b"s", lambda m: b"\xff")  # damaged metadata
        backend.shared.write(lambda txn: backend._store.repair_meta(txn, b"s"))
        repaired = _stored(backend, "meta", b"s") or b""
        good = payload == PAYLOAD
        assert len(repaired) == (META.size if good else META_UNSUMMED.size)
        assert _agree(mgr) == (["s"] if good else [])


class _Calls:
    """Counts both walk hooks' calls and hands the GIL over after each, as a network
    round trip would; it wraps both, so ids() still uses torpor_iterate_ids."""

    def __init__(self) -> None:
        self.records = 0
        self.ids: list[int] = []

    @torpor.hookimpl(wrapper=True)
    def torpor_iterate(self, cursor: Any, batch_size: int) -> Generator[None, Any, Any]:
        result = yield
        self.records += 1
        return result

    @torpor.hookimpl(wrapper=True)
    def torpor_iterate_ids(
        self, cursor: Any, batch_size: int, now_ms: int
    ) -> Generator[None, Any, Any]:
        result = yield
        self.ids.append(len(result[0]))
        threading.Event().wait(0)
        return result


def test_one_backend_call_per_batch_and_no_record_walk(tmp_path: Path) -> None:
    calls = _Calls()
    mgr, _ = _open(tmp_path / "env", plugins=[calls])
    with mgr:
        created = {mgr.create({"i": i}).id for i in range(35)}
        assert set(mgr.ids(batch_size=10)) == created
        assert (calls.ids, calls.records) == ([10, 10, 10, 5], 0)


def test_exactly_once_while_writers_switch_threads_constantly(tmp_path: Path) -> None:
    calls = _Calls()
    mgr, _ = _open(tmp_path / "env", plugins=[calls])
    with mgr:
        stable = [mgr.create({"stable": i}, timeout_ms=None).id for i in range(100)]
        churn = [mgr.create({"churn": i}, timeout_ms=None).id for i in range(60)]
        writers = 3
        started = threading.Barrier(writers + 1)
        stop = threading.Event()
        failures: list[BaseException] = []

        def writer(k: int) -> None:
            i = 0
            try:
                started.wait()
                while not stop.is_set():
                    slot = k + writers * (i % (len(churn) // writers))
                    mgr.delete(churn[slot])
                    churn[slot] = mgr.create({"churn": i}, timeout_ms=None).id
                    mgr.update(stable[(i * 7 + k) % 100], lambda d: {**d, "n": d.get("n", 0) + 1})
                    mgr.touch(stable[(i * 13 + k) % 100])
                    i += 1
            except BaseException as exc:  # reported below
                failures.append(exc)

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
        walks: list[list[str]] = []
        with busy_switching():
            for t in threads:
                t.start()
            try:
                started.wait()
                for size in (7, 64) * 6:
                    walks.append(list(mgr.ids(batch_size=size)))
            finally:
                stop.set()
                for t in threads:
                    t.join()
        assert not failures, failures
        assert calls.ids and not calls.records, "the walks did not use torpor_iterate_ids"
        for walk in walks:
            assert len(walk) == len(set(walk)), "an id was yielded twice"
            assert set(stable) <= set(walk), "a session that existed throughout was skipped"
