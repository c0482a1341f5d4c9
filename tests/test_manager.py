"""DESIGN §4's calls, on ets_like and on a required-hooks-only backend: what the
conformance kit does not check (tests/test_kit_catches.py runs the kit on both, and on
lmdb)."""

from __future__ import annotations

import dataclasses

import pytest

import torpor
from tests.conftest import OpenFn
from torpor import (
    ManagerClosed,
    SerializationError,
    SessionTooLarge,
)


def test_data_must_be_a_dict_and_refusals_say_what(mgr: torpor.Manager) -> None:
    with pytest.raises(SerializationError, match="dict"):
        mgr.create([1, 2])  # type: ignore[arg-type]
    with pytest.raises(SerializationError, match="data"):
        mgr.create({"s": {1, 2}})
    # Text UTF-8 cannot hold: a typed refusal, nothing stored, in a key or a value.
    for bad in ({"\ud800": 1}, {"a": ["\udfff"]}):
        with pytest.raises(SerializationError, match="surrogate"):
            mgr.create(bad, session_id="never")
    assert "never" not in mgr


def test_default_limit_is_one_mib(mgr: torpor.Manager) -> None:
    with pytest.raises(SessionTooLarge):
        mgr.create({"x": b"a" * (1 << 20)})
    assert mgr.create({"x": b"a" * ((1 << 20) - 200)}).version == 1


def test_closed_manager_refuses_calls(mgr: torpor.Manager) -> None:
    s = mgr.create({})
    mgr.close()
    mgr.close()  # idempotent
    for call in (
        lambda: mgr.get(s.id),
        lambda: mgr.create({}),
        lambda: list(mgr.ids()),
        lambda: mgr.hibernate_idle(1),
        lambda: mgr.stats(),
        lambda: len(mgr),
    ):
        with pytest.raises(ManagerClosed):
            call()


def test_context_manager_closes(open_mgr: OpenFn) -> None:
    with open_mgr() as mgr:
        mgr.create({})
    assert mgr.closed


def test_create_index_without_secondary_indexes_is_unsupported(mgr: torpor.Manager) -> None:
    with pytest.raises(torpor.UnsupportedOperation, match="find\\(\\) works"):
        mgr.create_index("user")
    with pytest.raises(torpor.InvalidArgument):
        mgr.create_index("")


def test_sessions_are_frozen_values(mgr: torpor.Manager) -> None:
    s = mgr.create({"a": 1})
    got = mgr.get(s.id)
    assert got is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.version = 5  # type: ignore[misc]
    assert dataclasses.replace(got, data={"b": 2}).data == {"b": 2}
    assert got == torpor.Session(
        got.id, {"a": 1}, got.created_at, got.last_accessed, got.timeout_ms, 1, False, s.incarnation
    )


def test_the_size_limit_is_measured_on_the_real_record(open_mgr: OpenFn) -> None:
    # A long id and metadata count: a payload under the limit can still make a record
    # over it (0.1 measured a placeholder envelope and let 4,372 bytes through 4,096).
    mgr = open_mgr(max_session_bytes=4096)
    long_id = "語" * 85  # 255 bytes
    data = {"pad": "x" * 3_900}
    record_size = len(
        torpor.Record(long_id, 0, 0, None, 1, False, 0, torpor.codec.encode_data(data)).blob
    )
    assert len(torpor.codec.encode_data(data)) < 4096 < record_size
    with pytest.raises(SessionTooLarge, match="max_session_bytes=4096"):
        mgr.create(data, session_id=long_id, timeout_ms=None)
    assert long_id not in mgr
    s = mgr.create({}, session_id=long_id, timeout_ms=None)
    with pytest.raises(SessionTooLarge):
        mgr.update(s.id, lambda d: data)
    with pytest.raises(SessionTooLarge):
        mgr.save(dataclasses.replace(s, data=data))
    assert mgr.peek(s.id).data == {}  # type: ignore[union-attr]
