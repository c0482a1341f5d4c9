"""Create, read, update, save, touch, delete, and their errors (docs/contract.md,
"The manager")."""

from __future__ import annotations

import dataclasses
import datetime
import uuid

import pytest

import torpor
from torpor.conformance._kit import STEP_MS, Kit
from torpor.conformance._marks import kit_module
from torpor.conformance.helpers import expect_raises, expect_returns


def test_create_get_peek_round_trip(kit: Kit) -> None:
    mgr = kit.open()
    data = {"s": "ü", "i": -(2**63), "u": 2**64 - 1, "f": 0.5, "b": b"\x00\xff", "n": None}
    data |= {"t": True, "l": [1, [2, {"k": "v"}]], "tuple": (1, 2), "d": {"e": {}}}
    s = mgr.create(data)
    expected = {**data, "tuple": [1, 2]}
    assert s.data == expected and s.version == 1 and not s.hibernated
    assert s.created_at == s.last_accessed == kit.clock()
    assert mgr.peek(s.id).data == expected  # type: ignore[union-attr]
    kit.clock.advance(STEP_MS)  # a read refreshes last_accessed (touch resolution < STEP_MS)
    got = mgr.get(s.id)
    assert got is not None and got.data == expected and got.last_accessed == kit.clock()
    assert mgr.get("never-created") is None and mgr.peek("never-created") is None


def test_data_is_never_shared(kit: Kit) -> None:
    mgr = kit.open()
    mine = {"items": [1]}
    s = mgr.create(mine)
    mine["items"].append(2)
    s.data["items"].append(3)
    got = mgr.get(s.id)
    assert got is not None and got.data == {"items": [1]}
    got.data["items"].append(4)
    assert mgr.peek(s.id).data == {"items": [1]}  # type: ignore[union-attr]


def test_create_with_an_id_in_use(kit: Kit) -> None:
    mgr = kit.open()
    mgr.create({"first": True}, session_id="taken")
    expect_raises(torpor.SessionExists, mgr.create, {"second": True}, session_id="taken")
    assert mgr.peek("taken").data == {"first": True}  # type: ignore[union-attr]


def test_generated_ids(kit: Kit) -> None:
    mgr = kit.open()
    ids = {mgr.create(name="名前").id for _ in range(50)}
    assert len(ids) == 50 and all(i.startswith("session_名前_") for i in ids)
    assert set(mgr.ids()) == ids


def test_update_and_versions(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({"n": 0})
    kit.clock.advance(7)
    u = mgr.update(s.id, lambda d: {"n": d["n"] + 1})
    assert u.data == {"n": 1} and u.version == 2 and u.last_accessed == kit.clock()
    mgr.get(s.id)
    mgr.touch(s.id)
    mgr.set_timeout(s.id, 10**9)
    assert mgr.peek(s.id).version == 2  # type: ignore[union-attr]  # no data written
    expect_raises(
        torpor.SessionNotFound, mgr.update, "absent", lambda d: d, what="mgr.update('absent', fn)"
    )


def test_update_that_raises_changes_nothing(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({"n": 1})

    def fail(data: dict[str, int]) -> dict[str, int]:
        data["n"] = 2
        raise KeyError("mine")

    expect_raises(KeyError, mgr.update, s.id, fail, match="mine")
    expect_raises(
        torpor.SerializationError,
        mgr.update,
        s.id,
        lambda d: {"n": {3}},
        what="mgr.update(id, fn returning a set)",
    )
    after = mgr.peek(s.id)
    assert after is not None and after.data == {"n": 1} and after.version == 1


def test_save_is_optimistic(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({"n": 0})
    a, b = mgr.get(s.id), mgr.get(s.id)
    assert a is not None and b is not None
    first = dataclasses.replace(a, data={"n": "a"})
    assert mgr.save(first).version == 2
    expect_raises(torpor.Conflict, mgr.save, b, what="mgr.save(copy read before another save)")
    assert mgr.peek(s.id).data == {"n": "a"}  # type: ignore[union-attr]


def test_save_never_resurrects(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({"n": 0})
    copy = mgr.get(s.id)
    assert copy is not None and mgr.delete(s.id)
    expect_raises(
        torpor.SessionNotFound, mgr.save, copy, what="mgr.save(copy read before the delete)"
    )
    assert mgr.peek(s.id) is None and s.id not in mgr and list(mgr.ids()) == []


def test_touch_set_timeout_delete(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({}, timeout_ms=100)
    kit.clock.advance(60)
    expect_returns(True, mgr.touch, s.id)
    kit.clock.advance(60)
    assert s.id in mgr
    stamp = mgr.peek(s.id).last_accessed  # type: ignore[union-attr]
    kit.clock.advance(10)
    expect_returns(True, mgr.set_timeout, s.id, None)
    assert mgr.peek(s.id).last_accessed == stamp  # type: ignore[union-attr]
    expect_returns(True, mgr.delete, s.id)
    expect_returns(False, mgr.delete, s.id, what="a second mgr.delete(id)")
    expect_returns(False, mgr.touch, s.id, what="mgr.touch(deleted id)")
    expect_returns(False, mgr.set_timeout, s.id, 5, what="mgr.set_timeout(deleted id, 5)")
    assert len(mgr) == 0


@pytest.mark.parametrize(
    "bad",
    [{"x": {1}}, {"x": datetime.date(2020, 1, 1)}, {"x": uuid.uuid4()}, {7: "int key"},
     {"x": [object()]}, {"x": 2**64}, {"x": bytearray(b"1")}, {"x": frozenset()}],
)  # fmt: skip
def test_unencodable_data_stores_nothing(kit: Kit, bad: dict) -> None:  # type: ignore[type-arg]
    mgr = kit.open()
    expect_raises(torpor.SerializationError, mgr.create, bad, session_id="victim")
    assert "victim" not in mgr and len(mgr) == 0


def test_size_limit(kit: Kit) -> None:
    mgr = kit.open(max_session_bytes=8192)
    ok = mgr.create({"x": "a" * 7000})
    expect_raises(
        torpor.SessionTooLarge,
        mgr.create,
        {"x": "a" * 9000},
        session_id="huge",
        what="mgr.create(9000 bytes of data)",
    )
    expect_raises(
        torpor.SessionTooLarge,
        mgr.update,
        ok.id,
        lambda d: {"x": "b" * 9000},
        what="mgr.update(id, fn returning 9000 bytes of data)",
    )
    assert "huge" not in mgr and mgr.peek(ok.id).data == {"x": "a" * 7000}  # type: ignore[union-attr]


def test_large_values_round_trip_exactly(kit: Kit) -> None:
    mgr = kit.open()
    blob = bytes(range(256)) * 3500  # 896,000 bytes, just under the default limit
    text = "長い文字列" * 10_000
    s = mgr.create({"blob": blob, "text": text})
    got = mgr.get(s.id)
    assert got is not None and got.data["blob"] == blob and got.data["text"] == text
    kit.clock.advance(100)
    assert mgr.hibernate_idle(10) == 1
    assert mgr.get(s.id).data == {"blob": blob, "text": text}  # type: ignore[union-attr]


def test_closed_manager(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({})
    mgr.close()
    expect_raises(torpor.ManagerClosed, mgr.get, s.id)


def test_a_stale_copy_never_overwrites_a_re_created_session(kit: Kit) -> None:
    # Incarnations (docs/contract.md): same id, same version, but another life of the id.
    mgr = kit.open()
    old = mgr.create({"owner": "ada"}, session_id="acct")
    assert mgr.delete("acct")
    new = mgr.create({"owner": "bob"}, session_id="acct")
    assert (new.version, new.created_at) == (old.version, old.created_at)  # same ms here
    assert new.incarnation != old.incarnation
    expect_raises(
        torpor.SessionNotFound,
        mgr.save,
        dataclasses.replace(old, data={"owner": "eve"}),
        what="mgr.save(copy of the deleted incarnation)",
        match="created again",
    )
    assert mgr.peek("acct").data == {"owner": "bob"}  # type: ignore[union-attr]
    # Expired and taken over by create: the same rule.
    kit.clock.advance(10 * STEP_MS)
    mgr.set_timeout("acct", 1)
    kit.clock.advance(2)
    again = mgr.create({"owner": "cy"}, session_id="acct")
    expect_raises(
        torpor.SessionNotFound,
        mgr.save,
        dataclasses.replace(new, data={"owner": "eve"}),
        what="mgr.save(copy of the expired incarnation)",
    )
    assert mgr.peek("acct") == dataclasses.replace(again, last_accessed=again.last_accessed)


@pytest.mark.parametrize(
    "fn",
    [lambda d: d.update(x=1), lambda d: None, lambda d: [("x", 1)], lambda d: "x"],
    ids=["dict.update", "None", "list", "str"],
)
def test_update_must_return_a_dict(kit: Kit, fn: object) -> None:
    mgr = kit.open()
    s = mgr.create({"n": 1})
    expect_raises(torpor.SerializationError, mgr.update, s.id, fn, match="dict")
    got = mgr.peek(s.id)
    assert got is not None and got.data == {"n": 1} and got.version == 1


def test_calling_the_manager_from_update_is_refused_at_once(kit: Kit) -> None:
    mgr = kit.open()
    a = mgr.create({"n": 1})
    b = mgr.create({"n": 2})
    for name, call in (
        ("mgr.get(same id)", lambda: mgr.get(a.id)),  # a deadlock on a lock-per-id backend
        ("mgr.get(other id)", lambda: mgr.get(b.id)),
        ("mgr.update(other id)", lambda: mgr.update(b.id, lambda d: d)),
        ("len(mgr)", lambda: len(mgr)),
        ("mgr.close()", mgr.close),  # would otherwise wait for the update that calls it
        ("torpor.open(same storage)", kit.open),  # an engine lock held by fn
    ):

        def fn(d: dict[str, object], call: object = call) -> dict[str, object]:
            call()  # type: ignore[operator]
            return {"changed": True}

        expect_raises(
            torpor.ReentrantCall, mgr.update, a.id, fn, what=f"mgr.update(id, fn calling {name})"
        )
    assert mgr.peek(a.id).data == {"n": 1}  # type: ignore[union-attr]
    assert mgr.get(b.id) is not None and not mgr.closed  # nothing is left locked


_BAD_ARGUMENTS = {
    "receive(timeout=-1)": (lambda m, s: m.receive(s, timeout=-1), "timeout"),
    "receive(timeout=nan)": (lambda m, s: m.receive(s, timeout=float("nan")), "timeout"),
    "receive(timeout=inf)": (lambda m, s: m.receive(s, timeout=float("inf")), "timeout"),
    "receive(timeout='1')": (lambda m, s: m.receive(s, timeout="1"), "timeout"),
    "receive(max_messages=0)": (lambda m, s: m.receive(s, max_messages=0), "max_messages"),
    "receive(max_messages=True)": (lambda m, s: m.receive(s, max_messages=True), "max_messages"),
    "set_timeout(-5)": (lambda m, s: m.set_timeout(s, -5), "timeout_ms"),
    "set_timeout(1.5)": (lambda m, s: m.set_timeout(s, 1.5), "timeout_ms"),
    "create(timeout_ms=inf)": (lambda m, s: m.create({}, timeout_ms=float("inf")), "timeout_ms"),
    "create(timeout_ms=2**62)": (lambda m, s: m.create({}, timeout_ms=2**62), "timeout_ms"),
    "update(id, None)": (lambda m, s: m.update(s, None), "fn"),
    "ids(batch_size=0)": (lambda m, s: list(m.ids(batch_size=0)), "batch_size"),
    "find()": (lambda m, s: m.find(), "criteria"),
}


@pytest.mark.parametrize("what", list(_BAD_ARGUMENTS))
def test_bad_arguments_are_invalid_argument(kit: Kit, what: str) -> None:
    call, argument = _BAD_ARGUMENTS[what]
    mgr = kit.open()
    s = mgr.create({})
    caught = expect_raises(torpor.InvalidArgument, call, mgr, s.id, what=f"mgr.{what}")
    assert caught.argument == argument, f"mgr.{what} named {caught.argument!r}, not {argument!r}"
    assert isinstance(caught, ValueError)


def test_a_huge_finite_timeout_is_accepted(kit: Kit) -> None:
    # The mailbox area's test_a_huge_finite_timeout_waits_for_the_next_message waits.
    mgr = kit.open()
    s = mgr.create({})
    mgr.send(s.id, "ready")
    expect_returns(["ready"], mgr.receive, s.id, timeout=1e300)  # a message: no wait at all


kit_module(globals(), "crud")
