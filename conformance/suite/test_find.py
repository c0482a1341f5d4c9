"""find() and create_index() (DESIGN §4)."""

from __future__ import annotations

import pytest

import torpor
from torpor.conformance._kit import Kit
from torpor.conformance._marks import kit_module


def test_find_by_equality(kit: Kit) -> None:
    mgr = kit.open()
    a = mgr.create({"user": "ada", "plan": "pro", "n": 1})
    b = mgr.create({"user": "bob", "plan": "pro", "n": 1})
    mgr.create({"user": "ada", "plan": "free"}, timeout_ms=1)
    kit.clock.advance(2)
    assert {s.id for s in mgr.find(user="ada")} == {a.id}
    assert {s.id for s in mgr.find(plan="pro", n=1)} == {a.id, b.id}
    assert mgr.find(user="ada", plan="free") == []
    assert mgr.find(missing_field=None) == []
    mgr.update(b.id, lambda d: {**d, "plan": "free"})
    assert {s.id for s in mgr.find(plan="pro")} == {a.id}


def test_create_index_is_native_or_unsupported(kit: Kit) -> None:
    mgr = kit.open()
    mgr.create({"user": "ada"})
    if torpor.Capability.SECONDARY_INDEX in mgr.capabilities:
        mgr.create_index("user")
        mgr.create_index("user")  # idempotent
        assert [s.data for s in mgr.find(user="ada")] == [{"user": "ada"}]
    else:
        with pytest.raises(torpor.UnsupportedOperation):
            mgr.create_index("user")
        assert len(mgr.find(user="ada")) == 1  # find still works, by scanning


kit_module(globals(), "find")
