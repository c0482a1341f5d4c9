"""Expiry at its exact boundary, on the kit's manual clock (docs/contract.md §1)."""

from __future__ import annotations

import torpor
from torpor.conformance._kit import STEP_MS, Kit
from torpor.conformance._marks import kit_module
from torpor.conformance._model import Counts, check_counts
from torpor.conformance.helpers import expect_raises, expect_returns


def test_boundary_is_strict(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({}, timeout_ms=STEP_MS)
    kit.clock.advance(STEP_MS)
    assert mgr.peek(s.id) is not None and s.id in mgr  # exactly the timeout: alive
    expect_returns(0, mgr.cleanup_expired, what="cleanup_expired() at exactly the timeout")
    assert mgr.peek(s.id) is not None, "a sweep removed a session at exactly its timeout"
    kit.clock.advance(1)
    assert mgr.peek(s.id) is None and s.id not in mgr
    assert mgr.get(s.id) is None
    assert mgr.cleanup_expired() == 0  # get removed it already


def test_expired_is_missing_for_every_call(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({"n": 1}, timeout_ms=10)
    copy = mgr.peek(s.id)
    assert copy is not None
    kit.clock.advance(11)
    expect_raises(torpor.SessionNotFound, mgr.update, s.id, lambda d: d)
    expect_raises(torpor.SessionNotFound, mgr.save, copy, what="save() of an expired session")
    assert not mgr.touch(s.id) and not mgr.set_timeout(s.id, None)
    assert list(mgr.ids()) == [] and list(mgr.sessions()) == [] and mgr.find(n=1) == []
    again = mgr.create({"n": 2}, session_id=s.id)
    assert again.version == 1 and mgr.get(s.id).data == {"n": 2}  # type: ignore[union-attr]


def test_cleanup_counts_exactly(kit: Kit) -> None:
    mgr = kit.open()
    short = {mgr.create({"i": i}, timeout_ms=STEP_MS).id for i in range(25)}
    long = {mgr.create({"i": i}, timeout_ms=3 * STEP_MS).id for i in range(10)}
    never = {mgr.create({"i": i}, timeout_ms=None).id for i in range(5)}
    kit.clock.advance(STEP_MS + 1)
    assert mgr.cleanup_expired() == 25
    assert mgr.cleanup_expired() == 0
    assert set(mgr.ids()) == long | never and not short & set(mgr.list_utf8_ids())
    kit.clock.advance(10**9)
    assert mgr.cleanup_expired() == 10
    assert set(mgr.ids()) == never and len(mgr) == 5


def test_access_postpones_expiry(kit: Kit) -> None:
    mgr = kit.open()
    by_get = mgr.create({}, timeout_ms=2 * STEP_MS).id
    by_touch = mgr.create({}, timeout_ms=2 * STEP_MS).id
    idle = mgr.create({}, timeout_ms=2 * STEP_MS).id
    for _ in range(3):
        kit.clock.advance(STEP_MS + 1)
        mgr.get(by_get)
        mgr.touch(by_touch)
    assert by_get in mgr and by_touch in mgr and idle not in mgr
    assert mgr.cleanup_expired() == 1


def test_set_timeout_moves_the_deadline(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({}, timeout_ms=STEP_MS)
    assert mgr.set_timeout(s.id, 5 * STEP_MS)
    kit.clock.advance(2 * STEP_MS)
    assert s.id in mgr and mgr.cleanup_expired() == 0
    assert mgr.set_timeout(s.id, STEP_MS)
    assert s.id not in mgr and mgr.cleanup_expired() == 1


def test_a_moved_deadline_leaves_no_trace(kit: Kit) -> None:
    # Once a deadline moves (a touch, a longer timeout, no timeout at all), the old
    # one counts for nothing: not in len(), ids() or stats(), not in a sweep.
    mgr = kit.open()
    ids = {
        how: mgr.create({"how": how}, session_id=how, timeout_ms=STEP_MS).id
        for how in ("no-timeout", "longer", "touched", "got")
    }
    kit.clock.advance(STEP_MS)  # every old deadline is "now"
    expect_returns(True, mgr.set_timeout, ids["no-timeout"], None)
    expect_returns(True, mgr.set_timeout, ids["longer"], 10 * STEP_MS)
    expect_returns(True, mgr.touch, ids["touched"])
    assert mgr.get(ids["got"]) is not None
    kit.clock.advance(STEP_MS // 2)  # past every old deadline, before every new one
    live = set(ids.values())
    check_counts(mgr, Counts(4, 4, 0, 0, 4), live, "the old deadlines passed")
    expect_returns(0, mgr.cleanup_expired, what="cleanup_expired() past the old deadlines")
    kit.clock.advance(10 * STEP_MS)  # past every new deadline
    live = {ids["no-timeout"]}
    check_counts(mgr, Counts(1, 1, 0, 3, 4), live, "the new deadlines passed")
    expect_returns(3, mgr.cleanup_expired, what="cleanup_expired() past the new deadlines")
    assert mgr.get(ids["no-timeout"]) is not None
    check_counts(mgr, Counts(1, 1, 0, 0, 1), live, "cleanup_expired()")


def test_cleanup_goes_past_one_batch(kit: Kit) -> None:
    # Batches of 2 (the manager asks an index for 8 batches a call, so a pass spans
    # several calls), expired sessions interleaved with live ones in every order a store
    # may keep (creation, deadline, hibernated or not).
    mgr = kit.open(sweep_batch_size=2)
    kinds: dict[str, list[str]] = {"short": [], "long": [], "never": []}
    timeouts = {"short": STEP_MS, "long": 3 * STEP_MS, "never": None}
    for i in range(84):
        kind = ("short", "long", "never")[i % 3]
        kinds[kind].append(mgr.create({"i": i}, timeout_ms=timeouts[kind]).id)
    kit.clock.advance(STEP_MS + 1)
    expect_returns(28, mgr.cleanup_expired, what="cleanup_expired() of 28 among 84")
    expect_returns(0, mgr.cleanup_expired, what="a second cleanup_expired()")
    survivors = kinds["long"] + kinds["never"]
    check_counts(mgr, Counts(56, 56, 0, 0, 56), survivors, "cleanup_expired")
    expect_returns(56, mgr.hibernate_idle, STEP_MS)
    kept = kinds["long"][::4]
    for sid in kept:
        mgr.get(sid)  # woken and refreshed: outlives the other long ones
    kit.clock.advance(2 * STEP_MS + 1)
    expect_returns(21, mgr.cleanup_expired, what="cleanup_expired() of 21 hibernated among 56")
    check_counts(mgr, Counts(35, 7, 28, 0, 35), kept + kinds["never"], "cleanup_expired")


def test_maintenance_goes_past_one_batch(kit: Kit) -> None:
    mgr = kit.open(sweep_batch_size=2, hibernate_after_ms=2 * STEP_MS)
    short = [mgr.create({"i": i}, timeout_ms=STEP_MS).id for i in range(21)]
    never = [mgr.create({"i": i}, timeout_ms=None).id for i in range(21)]
    for i in range(0, 21, 2):  # interleave: rewrite every other one in the other group
        mgr.update(short[i], lambda d: {**d, "x": 1})
        mgr.update(never[i], lambda d: {**d, "x": 1})
    kit.clock.advance(2 * STEP_MS + 1)
    fresh = [mgr.create({}, timeout_ms=None).id for _ in range(5)]
    check_counts(mgr, Counts(26, 26, 0, 21, 47), never + fresh, "the clock moved")
    mgr.run_maintenance()  # hibernates the 42 idle (expired ones too), then expires 21
    check_counts(mgr, Counts(26, 5, 21, 0, 26), never + fresh, "run_maintenance()")
    mgr.run_maintenance()
    check_counts(mgr, Counts(26, 5, 21, 0, 26), never + fresh, "a second run_maintenance()")


def test_counts_follow_expiry(kit: Kit) -> None:
    mgr = kit.open()
    short = [mgr.create({"i": i}, timeout_ms=STEP_MS).id for i in range(4)]
    long = [mgr.create({"i": i}, timeout_ms=3 * STEP_MS).id for i in range(3)]
    never = [mgr.create({"i": i}, timeout_ms=None).id for i in range(2)]
    live = {*short, *long, *never}
    check_counts(mgr, Counts(9, 9, 0, 0, 9), live, "create")
    kit.clock.advance(STEP_MS + 1)
    live -= set(short)
    check_counts(mgr, Counts(5, 5, 0, 4, 9), live, "4 sessions expired")
    assert mgr.get(short[0]) is None
    check_counts(mgr, Counts(5, 5, 0, 3, 8), live, "get() of an expired session")
    assert not mgr.touch(short[1])
    check_counts(mgr, Counts(5, 5, 0, 2, 7), live, "touch() of an expired session")
    assert not mgr.delete(short[2])
    check_counts(mgr, Counts(5, 5, 0, 1, 6), live, "delete() of an expired session")
    mgr.create({"again": True}, session_id=short[3], timeout_ms=None)
    live.add(short[3])
    check_counts(mgr, Counts(6, 6, 0, 0, 6), live, "create over an expired session")
    assert mgr.delete(long[0])
    live.remove(long[0])
    check_counts(mgr, Counts(5, 5, 0, 0, 5), live, "delete()")
    assert mgr.set_timeout(never[0], STEP_MS)  # idle for longer than that already
    live.remove(never[0])
    check_counts(mgr, Counts(4, 4, 0, 1, 5), live, "set_timeout() below the idle time")
    expect_returns(1, mgr.cleanup_expired)
    check_counts(mgr, Counts(4, 4, 0, 0, 4), live, "cleanup_expired()")
    kit.clock.advance(2 * STEP_MS)
    live -= set(long)
    check_counts(mgr, Counts(2, 2, 0, 2, 4), live, "2 more sessions expired")
    expect_returns(2, mgr.cleanup_expired)
    check_counts(mgr, Counts(2, 2, 0, 0, 2), live, "cleanup_expired()")


def test_a_touch_written_later_moves_expiry_and_idleness_in_the_store(kit: Kit) -> None:
    # With a touch resolution and the sweeper on, a cold read buffers its touch and the
    # manager writes it later with transact_batch (docs/contract.md §10).  What the
    # backend stores for it must move the session's expiry and idleness (its indexes)
    # and change nothing else; walks read the store itself.
    resolution = STEP_MS // 10
    mgr = kit.open(
        sweeper=True, hibernate_after_ms=None, cleanup_interval_ms=None,
        touch_resolution_ms=resolution,
    )  # fmt: skip
    s = mgr.create({"n": [1, "ü"]}, timeout_ms=STEP_MS)
    other = mgr.create({}, timeout_ms=STEP_MS)
    kit.clock.advance(STEP_MS // 2)
    read_at = kit.clock()
    assert mgr.get(s.id).last_accessed == read_at  # type: ignore[union-attr]
    assert mgr.flush() == 1
    (stored,) = (x for x in mgr.sessions() if x.id == s.id)
    assert (stored.last_accessed, stored.version, stored.data) == (read_at, 1, {"n": [1, "ü"]})
    kit.clock.advance(STEP_MS // 2 + 1)  # past the created time's deadline, not the read's
    assert mgr.hibernate_idle(STEP_MS // 2 + 2) == 1  # the other one only
    assert mgr.cleanup_expired() == 1 and other.id not in mgr
    assert sorted(mgr.ids()) == [s.id] and len(mgr) == 1
    kit.clock.advance(STEP_MS // 2)
    assert mgr.cleanup_expired() == 1 and len(mgr) == 0


kit_module(globals(), "expiry")
