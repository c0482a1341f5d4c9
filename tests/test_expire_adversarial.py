"""Adversarial review of the native expiry sweep (``torpor_expire``; issue 10): the
redis ``expire`` step, the length proof of a record's head that it and ``ids()`` now
rely on, and the manager's use of the hook, where the kit and
tests/test_native_expiry.py do not reach.  A test whose comment starts "Wrong:" failed
when written (what goes wrong, the contract, a likely fix); one that starts "Holds:"
guards something nothing else checks.  Real servers from tests/servers; time from
ManualClock; nothing mocked."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis

import torpor
from tests.redis_fixtures import OpenFn
from tests.servers import Standalone
from tests.servers.waiting import wait_until
from torpor import EventKind, LifecycleEvent, Record, hookimpl
from torpor.errors import SerializationError, SessionNotFound
from torpor.plugins.redis import create_backend
from torpor.plugins.redis._items import HEAD
from torpor.plugins.redis._keys import Keys

# -- the redis step at its limits ------------------------------------------------------


def test_a_sweep_step_removing_more_than_8000_sessions_completes(
    redis_standalone: Standalone,
    open_redis: OpenFn,
    raw: redis.Redis,
    namespace: str,
    clock: torpor.ManualClock,
) -> None:
    # Holds (failed when written; the step's limit is now capped at 1,000): the
    # expire step ZREMs its ids with unpack(), and Lua's unpack refuses more than ~8000
    # values.  Uncapped, sweep_batch_size=10_000 with that many sessions due in a
    # bucket made the step fail *after* deleting the records and ending their mail (a
    # script error rolls nothing back): ids/idle/exp entries stayed, and every later
    # sweep failed the same way (BackendUnavailable forever, nothing counted).
    # Contract (hookspecs.torpor_expire): any batch_size >= 1; each step atomic.
    backend = create_backend(url=redis_standalone.url, namespace=namespace)
    mgr = open_redis(backend, sweep_batch_size=10_000)
    first = mgr.create({}, timeout_ms=10).id
    template = Record.of(backend.torpor_fetch(first), first)
    due = [f"due-{i}" for i in range(8_200)]
    # The manager's own write path (records it encoded), in one call rather than 8,200
    # creates: only how many are due matters here.
    backend.torpor_transact_batch(due, lambda sid, current: template._replace(id=sid))
    clock.advance(11)
    assert mgr.cleanup_expired() == 8_201
    keys = Keys(namespace)
    assert (raw.zcard(keys.ids), raw.zcard(keys.expiry)) == (0, 0)


def test_a_damaged_value_removed_between_steps_hides_no_expired_session(
    open_redis: OpenFn, raw: redis.Redis, namespace: str, clock: torpor.ManualClock
) -> None:
    # Wrong: torpor_expire passes over the damaged entries it met by an *offset* into
    # exp ("damaged ones at the front"), counted across its steps.  When a damaged
    # value goes between two steps (its owner deletes it, as §8 tells them to; another
    # process repairs it), the offset is one too many: the next step starts past an
    # expired session, which stays after the iteration ends.  Here cleanup_expired()
    # removes 2 of 3 sessions expired throughout and says it was all.  Contract
    # (hookspecs.torpor_expire): "The iteration ends when every session that was
    # expired at now_ms throughout it has been removed".  Fix: resume after the last
    # entry looked at (its score and member), not at a count of entries; or recompute
    # the offset in the step as the rank of the last damaged entry still there.
    mgr = open_redis()
    other = open_redis()  # another process's manager on the same namespace
    damaged = mgr.create({}, timeout_ms=5).id  # first in exp: the earliest deadline
    raw.set(Keys(namespace).record(damaged.encode()), b"not a record")
    clock.advance(1)
    due = [mgr.create({"i": i}, timeout_ms=10).id for i in range(3)]
    clock.advance(20)

    class OwnerCleansUp:
        @hookimpl
        def torpor_event(self, event: LifecycleEvent) -> None:
            if event.kind is EventKind.EXPIRED:
                other.delete(damaged)  # after the first committed step

    swept = open_redis(plugins=[OwnerCleansUp()], sweep_batch_size=2)
    assert swept.cleanup_expired() == 3
    assert [sid for sid in due if raw.zscore(Keys(namespace).expiry, sid) is not None] == []


def test_the_sweep_drops_every_index_entry_of_a_record_that_is_gone(
    open_redis: OpenFn, raw: redis.Redis, namespace: str, clock: torpor.ManualClock
) -> None:
    # Wrong (minor, a leak): for an exp entry whose record is gone (evicted by a server
    # whose policy is not noeviction, deleted by an operator), the expire step removes
    # the id from ids, idle and exp but not from xs nor the x:<entry> sets of find, so
    # those stay for good (nothing else ever visits them: the id is in no index any
    # more).  The step's doc says it "drops the entries of records that are gone"; a
    # removal in commit always unindexes.  Fix: unindex(prefix, KEYS[4], id) in the
    # gone-record branch too.
    mgr = open_redis()
    mgr.create_index("team")
    gone = mgr.create({"team": 1}, timeout_ms=10).id
    keys = Keys(namespace)
    raw.delete(keys.record(gone.encode()))
    clock.advance(11)
    mgr.cleanup_expired()
    assert raw.zscore(keys.expiry, gone) is None  # the step did visit it
    assert raw.hlen(keys.buckets[0].entries) == 0
    assert not list(raw.scan_iter(match=keys.buckets[0].prefix + b"x:*"))


def test_an_exp_entry_that_disagrees_with_its_record_never_removes_a_live_session(
    open_redis: OpenFn, raw: redis.Redis, namespace: str, clock: torpor.ManualClock
) -> None:
    # Wrong (robustness): the expire step removes whatever exp scores below now once
    # the head is proved; it never looks at the record's own deadline.  An exp entry
    # that disagrees with its record (a foreign or restored write into the index, as
    # the adversarial tests plant foreign members there) makes the sweep delete a live
    # session, data and mail.  The generic pass re-reads each candidate and keeps it
    # (a stale index entry is passed over: core/_sweeps.py), as every other backend
    # does.  Contract (hookspecs.torpor_expire): remove exactly the sessions whose
    # Record.expires_at() < now_ms.  Fix: keep the deadline in the head beside the
    # incarnation (a touch rewrites the record anyway) and check it in the step.
    mgr = open_redis()
    live = mgr.create({"keep": True}, timeout_ms=60_000).id
    raw.zadd(Keys(namespace).expiry, {live: 0})
    clock.advance(1_000)
    assert mgr.cleanup_expired() == 0
    assert mgr.peek(live) is not None


# -- ids() and the length proof ---------------------------------------------------------


def _corrupt_envelope(raw: redis.Redis, keys: Keys, sid: str, other: str) -> str:
    raw.setrange(keys.record(sid.encode()), HEAD, b"X")  # the blob's magic; same length
    return sid


def _copy_under_another_id(raw: redis.Redis, keys: Keys, sid: str, other: str) -> str:
    # An operator's COPY (or RENAME) of a record to another id, listed there.
    raw.copy(keys.record(other.encode()), keys.record(b"copied-here"))
    raw.zadd(keys.ids, {b"copied-here": 0})
    return "copied-here"


@pytest.mark.parametrize("damage", [_corrupt_envelope, _copy_under_another_id])
def test_ids_lists_no_record_that_get_refuses(
    open_redis: OpenFn, raw: redis.Redis, namespace: str, damage: Any
) -> None:
    # Wrong: page_ids (ids()) trusts any value whose head has the magic and a length
    # that agrees, without looking at the blob: a record whose envelope was damaged in
    # place (same length) or one copied under another id is listed by ids(), while
    # get() raises SerializationError and len() and stats() count it as damaged: ids()
    # yields 2 where len() says 1.  The length proof made the first case new (the
    # SHA-1 proof caught it); the second passed both proofs.  Contract: hookspecs
    # torpor_iterate_ids returns only values for which Record.of(value, key) succeeds
    # (a torpor record naming its own key); §6 "Counts agree": len() is what ids()
    # yields on a quiet store; §8: ids() skips damaged records.  Fix: bind the proof to
    # the key (e.g. the first 8 hex of SHA-1(id .. length): the id is short, so the
    # cost stays constant, as lmdb's checksum covers its key) and check the envelope's
    # magic and the id the blob names (fixed offsets after the head) in the step.
    mgr = open_redis()
    keys = Keys(namespace)
    good = mgr.create({"a": 1}).id
    victim = mgr.create({"b": 2}).id
    bad = damage(raw, keys, victim, good)
    with pytest.raises(SerializationError):
        mgr.get(bad)
    listed = set(mgr.ids())
    assert bad not in listed
    assert len(listed) == len(mgr) == mgr.stats().sessions


# -- what a native sweep by another process does -----------------------------------------


def test_a_native_sweep_by_another_client_ends_exactly_the_expired_sessions(
    open_redis: OpenFn, raw: redis.Redis, namespace: str, clock: torpor.ManualClock
) -> None:
    # Holds: one pass of the redis step, run by another manager (its own connection
    # pool, as another process), removes hibernated and active sessions due before
    # now with their index entries and mail, wakes a receiver blocked in this client
    # with SessionNotFound (not SessionCancelled: no cancel mark is left), and keeps
    # a session whose deadline is now, one whose timeout was set to None meanwhile,
    # and one re-created over an expired id; find() then equals a scan.
    mine = open_redis()
    sweeper = open_redis()
    mine.create_index("team")
    blocked = mine.create({"team": 1}, timeout_ms=100).id
    mine.send(blocked, "queued")
    sleepy = mine.create({"team": 1}, timeout_ms=100).id
    at_deadline = mine.create({"team": 1}, timeout_ms=200).id
    unbounded = mine.create({"team": 1}, timeout_ms=100).id
    reborn = mine.create({"team": 2}, session_id="reborn", timeout_ms=50).id
    assert mine.receive(blocked) == ["queued"]
    clock.advance(60)
    mine.create({"team": 1}, session_id="reborn", timeout_ms=1_000)  # takes over the id
    assert mine.hibernate_idle(0) >= 1
    mine.set_timeout(unbounded, None)
    outcome: list[object] = []

    def receive() -> None:
        try:
            outcome.append(mine.receive(blocked, timeout=30))
        except Exception as exc:  # the type is what is checked
            outcome.append(exc)

    waiter = threading.Thread(target=receive)
    waiter.start()
    wait_until(
        lambda: mine.waiters(blocked) == 1, 5, lambda t: AssertionError(f"no receiver in {t} s")
    )
    clock.advance(140)  # now = at_deadline's deadline: still alive (strict)
    assert sweeper.cleanup_expired() == 2
    waiter.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], SessionNotFound), outcome
    assert not isinstance(outcome[0], torpor.SessionCancelled)
    assert sorted(mine.ids()) == sorted([at_deadline, unbounded, reborn])
    assert sleepy not in mine and blocked not in mine
    found = sorted(s.id for s in mine.find(team=1))
    assert found == sorted(s.id for s in mine.sessions() if s.data.get("team") == 1)
    assert found == sorted([at_deadline, unbounded, reborn])
    stats = mine.stats()
    assert (stats.sessions, stats.expired_pending, stats.damaged) == (3, 0, 0)
    prefix = Keys(namespace).buckets[0].prefix
    mail = [k for k in raw.scan_iter(match=prefix + b"m*") if not k.startswith(prefix + b"meta")]
    assert mail == []
