"""find() and create_index() (docs/contract.md §3)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torpor
from torpor.conformance._kit import STEP_MS, Kit
from torpor.conformance._marks import kit_module
from torpor.conformance.helpers import expect_raises, expect_returns


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
        expect_raises(torpor.UnsupportedOperation, mgr.create_index, "user")
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


def _finds(mgr: torpor.Manager, expected: list[str], **criteria: Any) -> None:
    """``find(**criteria)`` returns the sessions ``expected`` (once each), every one as
    ``peek`` shows it: not an old copy of it."""
    call = f"find({', '.join(f'{k}={v!r}' for k, v in criteria.items())})"
    found = mgr.find(**criteria)
    expect_returns(sorted(expected), lambda: sorted(s.id for s in found), what=f"ids of {call}")
    for session in found:
        now = mgr.peek(session.id)
        assert session == now, f"{call} gave {session}; peek() gives {now}"


def test_find_follows_every_write(kit: Kit) -> None:
    mgr = kit.open()
    _index_if_native(mgr, "plan")
    a = mgr.create({"plan": "free"}, session_id="a").id
    b = mgr.create({"plan": "free"}, session_id="b").id
    _finds(mgr, [a, b], plan="free")
    mgr.update(a, lambda d: {**d, "plan": "pro"})
    _finds(mgr, [a], plan="pro")
    _finds(mgr, [b], plan="free")
    copy = mgr.peek(b)
    assert copy is not None
    mgr.save(dataclasses.replace(copy, data={"plan": "team"}))
    _finds(mgr, [b], plan="team")
    _finds(mgr, [], plan="free")
    kit.clock.advance(2 * STEP_MS)
    expect_returns(2, mgr.hibernate_idle, STEP_MS)
    _finds(mgr, [b], plan="team")  # found hibernated, as it is
    mgr.update(b, lambda d: {"plan": "pro"})  # a write to a hibernated session
    _finds(mgr, [a, b], plan="pro")
    _finds(mgr, [], plan="team")
    assert mgr.touch(a) and mgr.set_timeout(b, None)
    _finds(mgr, [a, b], plan="pro")
    mgr.update(a, lambda d: {"other": "pro"})  # the field goes away
    _finds(mgr, [b], plan="pro")


def test_find_forgets_ended_sessions(kit: Kit) -> None:
    mgr = kit.open()
    _index_if_native(mgr, "team")
    ends = ["delete", "cancel", "get", "cleanup"]
    ended = {
        how: mgr.create({"team": "red"}, session_id=how, timeout_ms=STEP_MS).id for how in ends
    }
    kept = mgr.create({"team": "red"}, session_id="kept", timeout_ms=None).id
    _finds(mgr, [*ended.values(), kept], team="red")
    assert mgr.delete(ended["delete"])
    _finds(mgr, [ended["cancel"], ended["get"], ended["cleanup"], kept], team="red")
    assert mgr.cancel(ended["cancel"])
    _finds(mgr, [ended["get"], ended["cleanup"], kept], team="red")
    kit.clock.advance(STEP_MS + 1)
    _finds(mgr, [kept], team="red")  # expired: not found, even before it is removed
    assert mgr.get(ended["get"]) is None
    expect_returns(1, mgr.cleanup_expired)
    _finds(mgr, [kept], team="red")


def test_find_sees_each_session_under_a_reused_id(kit: Kit) -> None:
    mgr = kit.open()
    _index_if_native(mgr, "colour")
    mgr.create({"colour": "red"}, session_id="reused", timeout_ms=STEP_MS)
    assert mgr.delete("reused")
    mgr.create({"colour": "blue"}, session_id="reused", timeout_ms=STEP_MS)
    _finds(mgr, ["reused"], colour="blue")
    _finds(mgr, [], colour="red")
    assert mgr.cancel("reused")
    mgr.create({"colour": "white"}, session_id="reused", timeout_ms=STEP_MS)
    _finds(mgr, ["reused"], colour="white")
    _finds(mgr, [], colour="blue")
    kit.clock.advance(STEP_MS + 1)  # expired, not removed: the create replaces it
    mgr.create({"colour": "green"}, session_id="reused", timeout_ms=STEP_MS)
    _finds(mgr, ["reused"], colour="green")
    _finds(mgr, [], colour="white")
    kit.clock.advance(STEP_MS + 1)
    expect_returns(1, mgr.cleanup_expired)
    mgr.create({"colour": "black"}, session_id="reused", timeout_ms=None)
    _finds(mgr, ["reused"], colour="black")
    _finds(mgr, [], colour="green")


def test_create_index_files_every_stored_session(kit: Kit) -> None:
    # An index created over existing data starts from every stored session, whatever
    # its state: active, hibernated (touched or not), or expired but not yet removed.
    mgr = kit.open()
    active = mgr.create({"team": "red"}, session_id="active", timeout_ms=None).id
    asleep = [
        mgr.create({"team": "red"}, session_id=f"asleep-{i}", timeout_ms=t).id
        for i, t in enumerate([None, None, 10 * STEP_MS])
    ]
    expiring = mgr.create({"team": "red"}, session_id="expiring", timeout_ms=STEP_MS).id
    kit.clock.advance(2 * STEP_MS)
    mgr.touch(active)
    expect_returns(4, mgr.hibernate_idle, STEP_MS, what="hibernate_idle() of 3 live, 1 expired")
    expect_returns(True, mgr.touch, asleep[0])  # refreshed, still asleep
    _index_if_native(mgr, "team")
    _finds(mgr, [active, *asleep], team="red")
    mgr.get(asleep[1])  # a wake after the index exists
    _finds(mgr, [active, *asleep], team="red")
    mgr.update(asleep[2], lambda d: {"team": "blue"})
    _finds(mgr, [active, asleep[0], asleep[1]], team="red")
    _finds(mgr, [asleep[2]], team="blue")
    mgr.create({"team": "blue"}, session_id=expiring)  # takes over the expired record
    _finds(mgr, [asleep[2], expiring], team="blue")


# Values a session can hold that are == across types, and look-alikes that are not.
# Each is stored as it comes back (a tuple comes back as a list, and a list is never
# == a tuple); torpor.indexing.canonical_key is how an index can agree with ==.
_STORED: dict[str, Any] = {
    "zero": 0, "false": False, "neg-zero": -0.0, "one": 1, "one-float": 1.0, "true": True,
    "half": 0.5, "2**63": 2**63, "2**63-float": float(2**63), "2**64-1": 2**64 - 1,
    "-2**63": -(2**63), "str": "a", "bytes": b"a", "empty": "", "none": None,
    "list": [1, [2.0, {"k": True}]], "list-ints": [True, [2, {"k": 1.0}]], "empty-list": [],
    "dict": {"a": 1, "b": [2]}, "dict-reordered": {"b": [2.0], "a": True}, "dict-other": {"a": 2},
    "nan": float("nan"),
}  # fmt: skip
_QUERIES: list[Any] = [
    *_STORED.values(), 0.0, float(2**64 - 1), float(-(2**63)), (1, [2, {"k": 1}]),
    {"a": 1.0, "b": (2,)}, (), b"", {},
]  # fmt: skip


def test_find_agrees_with_python_equality_for_every_kind_of_value(kit: Kit) -> None:
    mgr = kit.open()
    _index_if_native(mgr, "before")  # filled by each write; "after" from existing data
    ids = {
        name: mgr.create({"before": v, "after": v}, session_id=name).id
        for name, v in _STORED.items()
    }
    _index_if_native(mgr, "after")
    for query in _QUERIES:
        expected = [ids[name] for name, v in _STORED.items() if v == query]
        _finds(mgr, expected, before=query)
        _finds(mgr, expected, after=query)
        _finds(mgr, expected, before=query, after=query)


kit_module(globals(), "find")
