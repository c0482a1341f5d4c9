"""find() and create_index() (DESIGN §4)."""

from __future__ import annotations

import pytest

import torpor
from torpor.conformance._kit import STEP_MS, Kit
from torpor.conformance._marks import kit_module


def _index_if_native(mgr: torpor.Manager, *fields: str) -> None:
    if torpor.Capability.SECONDARY_INDEX in mgr.capabilities:
        for field in fields:
            mgr.create_index(field)


def test_find_by_equality(kit: Kit) -> None:
    mgr = kit.open()
    _index_if_native(mgr, "user", "plan")  # before any data: kept up to date by writes
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


def test_find_follows_python_equality(kit: Kit) -> None:
    mgr = kit.open()
    _index_if_native(mgr, "n", "tags")
    one = mgr.create({"n": 1.0, "tags": (1, "a")})
    yes = mgr.create({"n": True, "tags": ["x"]})
    mgr.create({"n": 2, "tags": []})
    assert {s.id for s in mgr.find(n=1)} == {one.id, yes.id}
    assert [s.id for s in mgr.find(tags=[1.0, "a"])] == [one.id]
    kit.clock.advance(STEP_MS * 2)
    mgr.hibernate_idle(STEP_MS)  # hibernated sessions are still found
    assert {s.id for s in mgr.find(n=1)} == {one.id, yes.id}
    mgr.delete(yes.id)
    assert [s.id for s in mgr.find(n=1)] == [one.id]


kit_module(globals(), "find")
