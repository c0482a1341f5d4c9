"""A reopened persistent backend has everything it had (capability PERSISTENT)."""

from __future__ import annotations

import dataclasses

import pytest

import torpor
from torpor import Capability
from torpor.conformance._kit import STEP_MS, Kit, claims
from torpor.conformance._marks import kit_module
from torpor.conformance.helpers import expect_returns


def test_reopen_keeps_sessions_and_their_state(kit: Kit) -> None:
    mgr = kit.open()
    kept = mgr.create({"n": 1, "名": "値"}, session_id="日本語", timeout_ms=10 * STEP_MS)
    mgr.update(kept.id, lambda d: {**d, "n": 2})
    sleepy = mgr.create({"zzz": True}, timeout_ms=None)
    gone = mgr.create({})
    mgr.delete(gone.id)
    kit.clock.advance(2 * STEP_MS)
    mgr.touch(kept.id)
    assert mgr.hibernate_idle(STEP_MS) == 1
    before = {s.id: s for s in mgr.sessions()}

    again = kit.reopen(mgr)
    after = {s.id: s for s in again.sessions()}
    assert after == before
    assert after[sleepy.id].hibernated and not after[kept.id].hibernated
    assert after[kept.id].version == 2 and after[kept.id].timeout_ms == 10 * STEP_MS
    assert gone.id not in again and len(again) == 2
    assert again.get(sleepy.id).data == {"zzz": True}  # type: ignore[union-attr]


@pytest.mark.torpor_requires("shared_mailbox")
def test_reopen_keeps_pending_messages(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({})
    mgr.send(s.id, "normal-1")
    mgr.send(s.id, "urgent", priority=True)
    mgr.send(s.id, "normal-2")
    again = kit.reopen(mgr)
    assert again.receive(s.id, max_messages=10) == ["urgent", "normal-1", "normal-2"]


def test_reopen_after_cleanup_and_save(kit: Kit) -> None:
    mgr = kit.open()
    doomed = mgr.create({}, timeout_ms=1)
    s = mgr.create({"v": 1})
    mgr.save(dataclasses.replace(s, data={"v": 2}))
    kit.clock.advance(2)
    assert mgr.cleanup_expired() == 1
    again = kit.reopen(mgr)
    assert doomed.id not in again and again.peek(s.id).data == {"v": 2}  # type: ignore[union-attr]
    with pytest.raises(torpor.Conflict):
        again.save(s)


def test_an_urgent_close_keeps_every_acknowledged_write(kit: Kit) -> None:
    # DESIGN §7: close(urgent=True) skips what it can drop safely, never a write that
    # returned; reopening finds every one of them.
    mgr = kit.open()
    kept = mgr.create({"n": 1}, session_id="kept", timeout_ms=None)
    sleepy = mgr.create({"zzz": True}, timeout_ms=None)
    gone = mgr.create({})
    kit.clock.advance(2 * STEP_MS)
    mgr.touch(kept.id)
    assert mgr.hibernate_idle(STEP_MS) == 2
    assert mgr.delete(gone.id)
    mailbox = claims(mgr, Capability.SHARED_MAILBOX)
    if mailbox:
        mgr.send(kept.id, "kept-message")
    before = {s.id: s for s in mgr.sessions()}
    last = mgr.update(kept.id, lambda d: {**d, "n": 2})  # the last write before the close
    before[kept.id] = last
    mgr.close(urgent=True)

    again = kit.open()
    expect_returns(
        before, lambda: {s.id: s for s in again.sessions()}, what="sessions() after reopening"
    )
    expect_returns(None, again.peek, gone.id, what="peek(deleted) after reopening")
    expect_returns(
        {"zzz": True}, lambda: getattr(again.get(sleepy.id), "data", None), what="get(hibernated)"
    )
    if mailbox:
        expect_returns(["kept-message"], again.receive, kept.id, max_messages=10)


def test_an_urgent_close_keeps_acknowledged_metadata_writes(kit: Kit) -> None:
    # Writes that change no data (hibernation, a wake, touch, set_timeout) are
    # acknowledged writes like any other (docs/contract.md §4): the last writes before
    # an urgent close are only those here, and reopening must find every one.
    mgr = kit.open()
    ids = ["woken", "touched", "longer", "never", "asleep"]
    for sid in ids:
        mgr.create({"sid": sid}, session_id=sid, timeout_ms=10 * STEP_MS)
    kit.clock.advance(2 * STEP_MS)
    expect_returns(5, mgr.hibernate_idle, STEP_MS)
    kit.clock.advance(STEP_MS)
    woken = mgr.get("woken")
    assert woken is not None and not woken.hibernated, woken
    expect_returns(True, mgr.touch, "touched")
    expect_returns(True, mgr.set_timeout, "longer", 30 * STEP_MS)
    expect_returns(True, mgr.set_timeout, "never", None)
    before = {sid: _metadata(mgr.peek(sid)) for sid in ids}
    assert before["touched"] == (kit.clock(), 10 * STEP_MS, True), before
    mgr.close(urgent=True)

    again = kit.open()
    for sid in ids:
        expect_returns(
            before[sid],
            lambda sid=sid: _metadata(again.peek(sid)),
            what=f"(last_accessed, timeout_ms, hibernated) of {sid!r} after reopening",
        )


def _metadata(session: torpor.Session | None) -> tuple[int, int | None, bool] | None:
    if session is None:
        return None
    return session.last_accessed, session.timeout_ms, session.hibernated


kit_module(globals(), "persistence", "persistent")
