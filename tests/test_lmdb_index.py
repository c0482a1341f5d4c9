"""Index keys (``torpor.indexing``) and the lmdb secondary index that uses them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import torpor
from torpor.indexing import KEY_BYTES, canonical_key

pytest.importorskip("lmdb")


def _open(path: Path, clock: torpor.ManualClock | None = None) -> torpor.Manager:
    return torpor.open("lmdb", path=str(path), clock=clock or torpor.ManualClock(), sweeper=False)


# -- canonical_key -----------------------------------------------------------------------
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.binary(),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
    ),
    max_leaves=12,
)


def _twin(value: Any, draw: st.DrawFn) -> Any:
    """A value equal to ``value`` (``==``) but spelled differently where Python allows:
    int/float/bool swapped, dict keys reordered, items of containers twinned."""
    if isinstance(value, bool):
        return draw(st.sampled_from([value, int(value), float(value)]))
    if isinstance(value, int):
        choices: list[Any] = [value]
        as_float = float(value) if abs(value) < 2**1023 else None
        if as_float is not None and as_float == value:  # exact only when representable
            choices.append(as_float)
        if value in (0, 1):
            choices.append(bool(value))
        return draw(st.sampled_from(choices))
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return draw(st.sampled_from([value, int(value), -0.0 if value == 0 else value]))
        return value
    if isinstance(value, list):
        return [_twin(item, draw) for item in value]
    if isinstance(value, tuple):
        return tuple(_twin(item, draw) for item in value)
    if isinstance(value, dict):
        keys = draw(st.permutations(list(value)))
        return {k: _twin(value[k], draw) for k in keys}
    return value


@st.composite
def _equal_pairs(draw: st.DrawFn) -> tuple[Any, Any]:
    value = draw(_values)
    return value, _twin(value, draw)


@settings(max_examples=400, deadline=None)
@given(_equal_pairs())
def test_equal_values_have_equal_keys(pair: tuple[Any, Any]) -> None:
    a, b = pair
    assert a == b or "nan" in repr(a)  # NaN inside makes a twin unequal (nothing to promise)
    assert canonical_key(a) == canonical_key(b)  # NaN or not


@settings(max_examples=300, deadline=None)
@given(_values, _values)
def test_any_two_storable_values(a: Any, b: Any) -> None:
    key_a, key_b = canonical_key(a), canonical_key(b)  # never raises for storable values
    assert len(key_a) == len(key_b) == KEY_BYTES
    if a == b:
        assert key_a == key_b


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, 1.0),
        (1, True),
        (0, -0.0),
        (False, 0.0),
        (10**20, 1e20),
        (2**63, float(2**63)),
        (-(2**64), -float(2**64)),
        ([1], [1.0]),
        ((1, [True]), (1.0, [1])),
        ({"a": 1, "b": [2]}, {"b": [2.0], "a": True}),
        (float("inf"), float("inf")),
        ("日本語", "日本語"),
        (b"\x00", bytearray(b"\x00")),
    ],
)
def test_known_equal_pairs(a: Any, b: Any) -> None:
    assert a == b
    assert canonical_key(a) == canonical_key(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [(10**30, 1e30), (1, "1"), ("a", b"a"), (0.5, 0), ([1, 2], [2, 1]), ({"a": 1}, {"b": 1})],
)
def test_unequal_pairs_differ(a: Any, b: Any) -> None:
    assert a != b
    assert canonical_key(a) != canonical_key(b)


def test_lists_and_tuples_share_keys_on_purpose() -> None:
    # A stored tuple comes back as a list: one key for both only adds candidates.
    assert canonical_key([1, (2,)]) == canonical_key((1.0, [2]))


def test_values_no_session_can_hold_are_refused_plainly() -> None:
    with pytest.raises(TypeError):
        canonical_key({1, 2})
    deep: list[Any] = []
    deep.append(deep)
    with pytest.raises(ValueError):
        canonical_key(deep)


# -- the lmdb index ----------------------------------------------------------------------
def test_huge_numbers_are_indexed_and_found(tmp_path: Path) -> None:
    with _open(tmp_path / "env") as mgr:
        mgr.create_index("n")
        big = mgr.create({"n": 1e20})  # used to raise a raw OverflowError
        huge = mgr.create({"n": 1e30})
        top = mgr.create({"n": 2**64 - 1})  # the largest int msgpack holds
        assert [s.id for s in mgr.find(n=10**20)] == [big.id]
        assert [s.id for s in mgr.find(n=1e20)] == [big.id]
        assert [s.id for s in mgr.find(n=int(1e30))] == [huge.id]  # the exact int it is
        assert mgr.find(n=10**30) == []  # 10**30 != 1e30
        assert [s.id for s in mgr.find(n=2**64 - 1)] == [top.id]
        mgr.update(big.id, lambda d: {"n": [float("inf"), -1e300]})
        assert [s.id for s in mgr.find(n=[float("inf"), -1e300])] == [big.id]


def test_find_sees_a_session_created_again_over_an_expired_one(tmp_path: Path) -> None:
    clock = torpor.ManualClock()
    with _open(tmp_path / "env", clock) as mgr:
        mgr.create_index("colour")
        mgr.create({"colour": "red"}, session_id="s", timeout_ms=1000)
        clock.advance(5000)  # expired, not swept: its record and index entries stay
        again = mgr.create({"colour": "blue"}, session_id="s", timeout_ms=1000)
        assert again.version == 1  # the same version as the old record had
        assert [s.id for s in mgr.find(colour="blue")] == ["s"]
        assert mgr.find(colour="red") == []


def test_find_without_an_index_declines_and_the_manager_scans(tmp_path: Path) -> None:
    from torpor.plugins.lmdb import create_backend

    backend = create_backend(path=str(tmp_path / "env"))
    with torpor.open(backend, clock=torpor.ManualClock(), sweeper=False) as mgr:
        mgr.create({"a": 1})
        assert backend.torpor_find({"a": 1}) is None  # not indexed: no scan in one txn
        assert len(mgr.find(a=1)) == 1
        mgr.create_index("a")
        pairs = backend.torpor_find({"a": 1})
        assert pairs is not None and len(pairs) == 1 and isinstance(pairs[0][1], bytes)
        assert backend.torpor_find({"a": {1, 2}}) is None  # no key for a set: declined
        assert mgr.find(a={1, 2}) == []


def test_an_index_build_skips_damaged_values(tmp_path: Path) -> None:
    from torpor.plugins.lmdb import create_backend

    backend = create_backend(path=str(tmp_path / "env"))
    with torpor.open(backend, clock=torpor.ManualClock(), sweeper=False) as mgr:
        good = mgr.create({"f": 1})
        backend.shared.write(
            lambda txn: txn.put(b"junk", b"TP\x02\x00garbage", db=backend._dbs.sessions)
        )
        mgr.create_index("f")
        assert [s.id for s in mgr.find(f=1)] == [good.id]
        assert mgr.delete("junk")  # no metadata, undecodable: removed all the same
        assert mgr.stats().damaged == 0


# -- long index operations stop when the backend closes --------------------------------------
def _indexed_store(path: Path, n: int) -> tuple[torpor.Manager, Any]:
    from torpor.plugins.lmdb import create_backend

    backend = create_backend(path=str(path), durability="nosync")
    mgr = torpor.open(backend, clock=torpor.ManualClock(), sweeper=False)
    for i in range(n):
        mgr.create({"f": i % 3}, timeout_ms=None)
    return mgr, backend


def _index_size(backend: Any) -> tuple[int, int]:
    dbs = backend._dbs
    return backend.shared.read(  # type: ignore[no-any-return]
        lambda txn: (txn.stat(dbs.fields)["entries"], txn.stat(dbs.index)["entries"])
    )


def test_an_index_build_stops_when_the_backend_closes(tmp_path: Path) -> None:
    mgr, backend = _indexed_store(tmp_path / "env", 1000)
    with mgr:
        backend._store.closing = True  # what torpor_close sets first, before it returns
        try:
            with pytest.raises(torpor.ManagerClosed):
                backend.torpor_create_index("f")  # checks every few hundred records
        finally:
            backend._store.closing = False
        assert _index_size(backend) == (0, 0)  # aborted: nothing half-built committed
        assert backend.torpor_find({"f": 1}) is None
        mgr.create_index("f")
        assert _index_size(backend) == (1, 1000)


def test_an_urgent_close_during_an_index_build_leaves_all_or_nothing(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "env"
    mgr, _ = _indexed_store(path, 30_000)  # a build longer than the close's 50 ms drain
    outcome: list[str] = []

    def build() -> None:
        try:
            mgr.create_index("f")
            outcome.append("built")
        except torpor.ManagerClosed:
            outcome.append("stopped")

    builder = threading.Thread(target=build)
    builder.start()
    mgr.close(urgent=True)
    builder.join()
    assert outcome in (["built"], ["stopped"])
    mgr, backend = _indexed_store(path, 0)
    with mgr:
        fields, entries = _index_size(backend)
        assert (fields, entries) in ((1, 30_000), (0, 0)), (outcome, fields, entries)
        assert len(mgr.find(f=1)) == 10_000  # through the index, or a scan


def test_an_adoption_stops_when_the_backend_closes(tmp_path: Path) -> None:
    from torpor.plugins.lmdb._store import adopt

    mgr, backend = _indexed_store(tmp_path / "env", 600)
    with mgr:
        mgr.create_index("f")

        def closed() -> None:
            raise torpor.ManagerClosed("closing")

        with pytest.raises(torpor.ManagerClosed):
            backend.shared.write(lambda txn: adopt(txn, backend._dbs, 1 << 20, closed))
        assert _index_size(backend) == (1, 600)  # the rebuild was rolled back whole
        assert len(mgr.find(f=2)) == 200


# -- index entries pointing nowhere ----------------------------------------------------------
def test_an_index_entry_pointing_nowhere_is_deleted_by_the_next_write(tmp_path: Path) -> None:
    from torpor.plugins.lmdb._index import entry_prefix

    mgr, backend = _indexed_store(tmp_path / "env", 3)
    dbs = backend._dbs
    ghost = entry_prefix("f", 1) + b"ghost"

    def present() -> bool:
        return backend.shared.read(lambda txn: txn.get(ghost, db=dbs.index)) is not None

    with mgr:
        mgr.create_index("f")
        backend.shared.write(lambda txn: txn.put(ghost, b"", db=dbs.index))
        assert len(mgr.find(f=1)) == 1  # the ghost is skipped
        assert present()  # a read does not write...
        mgr.create({"f": 2})
        assert not present()  # ...the next write deletes it
