"""The redis backend's shared mailbox on real servers: lanes, exactly-once delivery
across threads and processes, removals reaching receivers blocked elsewhere, mail
discarded with its session, close(), and what is left in the keyspace.  Nothing is
mocked; time comes from ManualClock, and waits are bounded polls for real events."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

import torpor
from tests.redis_fixtures import OpenFn
from tests.servers import Cluster, ServerBinary, Standalone, standalone
from torpor import codec
from torpor.conformance.helpers import blocked_consumer
from torpor.plugins.redis import RedisBackend, create_backend
from torpor.plugins.redis._items import packed
from torpor.plugins.redis._keys import Keys
from torpor.plugins.redis._mailbox import COUNT_TTL_MS, RedisMailbox

ROOT = Path(__file__).resolve().parent.parent

# A second process: a manager of its own on the same namespace.  argv: url, namespace,
# mode, session ids.  "consume": receive until idle for 0.5 s, print what came.
# "block": one thread per id blocked in receive, print what each raised or returned.
_CHILD = """
import json, sys, threading
import torpor
from torpor.plugins.redis import create_backend

url, namespace, mode, *ids = sys.argv[1:]
mgr = torpor.open(create_backend(url=url, namespace=namespace),
                  clock=torpor.ManualClock(), sweeper=False)
out = {}

def run(sid):
    try:
        if mode == "consume":
            got = []
            while batch := mgr.receive(sid, max_messages=3, timeout=0.5 if got else 30):
                got.extend(batch)
            out[sid] = {"received": got}
        else:
            out[sid] = {"returned": mgr.receive(sid, timeout=30)}
    except Exception as exc:
        out[sid] = {"raised": type(exc).__name__}

threads = [threading.Thread(target=run, args=(sid,)) for sid in ids]
for t in threads:
    t.start()
for t in threads:
    t.join()
mgr.close()
print(json.dumps(out))
"""


@pytest.fixture
def backend(redis_standalone: Standalone, namespace: str) -> RedisBackend:
    return create_backend(url=redis_standalone.url, namespace=namespace)


def _mail_key(namespace: str, lane: str, session: torpor.Session) -> bytes:
    member = session.id.encode()
    return Keys(namespace).bucket_of(member).mail(lane, session.incarnation, member)


def _wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.002)


def _registered(raw: redis.Redis, key: bytes, n: int) -> Callable[[], bool]:
    """Whether ``n`` receivers (in any process) are counted as blocked on ``key``."""
    return lambda: int(raw.get(key) or 0) >= n


def _child(url: str, namespace: str, mode: str, *ids: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, url, namespace, mode, *ids],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _result(child: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err[-3000:]
    result: dict[str, Any] = json.loads(out)
    return result


# -- lanes ------------------------------------------------------------------------------


def test_the_backend_claims_the_shared_mailbox(open_redis: OpenFn, backend: RedisBackend) -> None:
    mgr = open_redis(backend)
    assert torpor.Capability.SHARED_MAILBOX in mgr.capabilities
    assert isinstance(backend.torpor_mailbox(), RedisMailbox)


def test_priority_lane_first_each_lane_fifo_in_the_keyspace(
    open_redis: OpenFn, raw: redis.Redis, namespace: str
) -> None:
    mgr = open_redis()
    s = mgr.create({})
    for i in range(5):
        mgr.send(s.id, i)
    mgr.send(s.id, "p0", priority=True)
    mgr.send(s.id, "p1", priority=True)
    priority, normal = _mail_key(namespace, "mp", s), _mail_key(namespace, "mn", s)
    assert [codec.decode_value(m, "") for m in raw.lrange(priority, 0, -1)] == ["p0", "p1"]
    assert [codec.decode_value(m, "") for m in raw.lrange(normal, 0, -1)] == list(range(5))
    assert mgr.pending(s.id) == 7
    assert mgr.receive(s.id, max_messages=3) == ["p0", "p1", 0]
    mgr.send(s.id, "p2", priority=True)
    assert mgr.receive(s.id, max_messages=2) == ["p2", 1]
    assert mgr.receive(s.id, max_messages=10) == [2, 3, 4]
    assert not raw.exists(priority) and not raw.exists(normal)  # Redis drops empty lists
    assert mgr.receive(s.id) == []


def test_a_send_resent_after_a_lost_reply_is_queued_once(
    open_redis: OpenFn, backend: RedisBackend, raw: redis.Redis, namespace: str
) -> None:
    # What redis-py does after a timeout: the same call again, with the same token.
    mgr = open_redis(backend)
    s = mgr.create({})
    member = s.id.encode()
    bucket = backend.keys.bucket_of(member)
    lane = bucket.mail("mn", s.incarnation, member)
    call = ([bucket.record(member), lane, bucket.token("resent"), bucket.mailed],
            [member, packed(s.incarnation), b"once"])  # fmt: skip
    assert backend.scripts.call("send", *call) == 1
    assert backend.scripts.call("send", *call) == 1  # the first answer, nothing queued
    assert raw.lrange(lane, 0, -1) == [b"once"]
    assert 0 < raw.pttl(bucket.token("resent")) <= 60_000


def test_a_waiting_receive_returns_the_first_message_without_filling_the_batch(
    open_redis: OpenFn, raw: redis.Redis, namespace: str
) -> None:
    mgr = open_redis()
    s = mgr.create({})
    received: list[list[Any]] = []
    consumer, raised = blocked_consumer(mgr, s.id, received=received)
    count = _mail_key(namespace, "mq", s)
    assert int(raw.get(count) or 0) == 1  # counted where removals in any process see it
    assert 0 < raw.pttl(count) <= COUNT_TTL_MS  # and only for as long as it refreshes
    mgr.send(s.id, "first")
    consumer.join(timeout=10)
    assert not consumer.is_alive() and raised == [] and received == [["first"]]
    assert not raw.exists(count)  # it left the count on its way out
    assert mgr.waiters(s.id) == 0


def test_a_receive_that_times_out_returns_nothing_and_leaves_no_count(
    open_redis: OpenFn, raw: redis.Redis, namespace: str
) -> None:
    mgr = open_redis()
    s = mgr.create({})
    assert mgr.receive(s.id, max_messages=5, timeout=0.3) == []
    assert not raw.exists(_mail_key(namespace, "mq", s))
    assert mgr.waiters(s.id) == 0
    mgr.send(s.id, "later")
    assert mgr.receive(s.id, max_messages=5, timeout=0.3) == ["later"]


def test_priority_behind_100000_normal_messages_comes_first_and_leaves_the_backlog(
    open_redis: OpenFn, raw: redis.Redis, namespace: str
) -> None:
    mgr = open_redis()
    s = mgr.create({})
    normal = _mail_key(namespace, "mn", s)
    backlog = [codec.encode_value(i) for i in range(100_000)]
    for start in range(0, len(backlog), 10_000):  # what 100,000 sends leave, faster
        raw.rpush(normal, *backlog[start : start + 10_000])
    mgr.send(s.id, "urgent", priority=True)
    assert mgr.receive(s.id, max_messages=1) == ["urgent"]
    # The receive popped one element of the priority lane and nothing else.
    assert raw.llen(normal) == 100_000 == mgr.pending(s.id)
    assert raw.lindex(normal, 0) == backlog[0] and raw.lindex(normal, -1) == backlog[-1]
    mgr.send(s.id, "urgent again", priority=True)
    assert mgr.receive(s.id, max_messages=3) == ["urgent again", 0, 1]
    assert raw.llen(normal) == 99_998


# -- exactly once -------------------------------------------------------------------------


def test_exactly_once_to_threads_blocked_while_messages_arrive(open_redis: OpenFn) -> None:
    mgr = open_redis()
    s = mgr.create({})
    total = 1500
    parts: list[list[int]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def consume(k: int) -> None:
        try:
            # Each waits while mail trickles in: the blocking pops are contested.
            while batch := mgr.receive(s.id, max_messages=1 + k, timeout=0.5):
                parts[k].extend(batch)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    _wait_until(lambda: mgr.waiters(s.id) == 4, "4 consumers blocked")
    for i in range(total):
        mgr.send(s.id, i, priority=i % 7 == 0)
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    everything = sorted(m for part in parts for m in part)
    assert everything == list(range(total)), "a message was lost or delivered twice"
    for part in parts:  # each lane stays FIFO for every consumer
        for lane in (lambda m: m % 7 == 0, lambda m: m % 7 != 0):
            mine = [m for m in part if lane(m)]
            assert mine == sorted(mine)


def test_exactly_once_between_two_processes(
    open_redis: OpenFn, raw: redis.Redis, namespace: str, redis_standalone: Standalone
) -> None:
    mgr = open_redis()
    s = mgr.create({}, timeout_ms=None)
    child = _child(redis_standalone.url, namespace, "consume", s.id)
    _wait_until(_registered(raw, _mail_key(namespace, "mq", s), 1), "the child blocked")
    mgr.send(s.id, 0)
    _wait_until(lambda: mgr.pending(s.id) == 0, "the child took the first message")
    here: list[int] = []

    def consume() -> None:
        while batch := mgr.receive(s.id, max_messages=2, timeout=0.5):
            here.extend(batch)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(1, 800):
        mgr.send(s.id, i)
    consumer.join(timeout=30)
    there = _result(child)[s.id]["received"]
    assert 0 in there
    assert sorted(here + there) == list(range(800)), "a message was lost or delivered twice"
    assert here == sorted(here) and there == sorted(there)


def test_more_receivers_than_blocking_connections_take_turns(
    open_redis: OpenFn, redis_standalone: Standalone, namespace: str
) -> None:
    # One connection per pool: two of the three receivers find none free for a while
    # and poll instead of blocking on the server; each still gets its message once.
    backend = create_backend(
        url=redis_standalone.url, namespace=namespace, max_connections=1, pool_timeout=0.1
    )
    mgr = open_redis(backend)
    s = mgr.create({})
    got: list[list[Any]] = []
    consumers = [blocked_consumer(mgr, s.id, received=got) for _ in range(3)]
    _wait_until(lambda: mgr.waiters(s.id) == 3, "3 receivers waiting")
    for i in range(3):
        mgr.send(s.id, i)
    for thread, raised in consumers:
        thread.join(timeout=10)
        assert not thread.is_alive() and raised == []
    assert sorted(m for batch in got for m in batch) == [0, 1, 2]


# -- removals -----------------------------------------------------------------------------


def test_a_cancel_and_a_delete_reach_receivers_blocked_in_another_process(
    open_redis: OpenFn, raw: redis.Redis, namespace: str, redis_standalone: Standalone
) -> None:
    mgr = open_redis()
    cancelled = mgr.create({}, timeout_ms=None)
    deleted = mgr.create({}, timeout_ms=None)
    child = _child(redis_standalone.url, namespace, "block", cancelled.id, deleted.id)
    for s in (cancelled, deleted):
        _wait_until(_registered(raw, _mail_key(namespace, "mq", s), 1), "the child blocked")
    assert mgr.cancel(cancelled.id) and mgr.delete(deleted.id)
    assert _result(child) == {
        cancelled.id: {"raised": "SessionCancelled"},
        deleted.id: {"raised": "SessionNotFound"},
    }
    # The wake-ups were popped; the cancel mark stays a minute for late receivers.
    for s in (cancelled, deleted):
        assert not raw.exists(_mail_key(namespace, "mw", s), _mail_key(namespace, "mq", s))
    assert 0 < raw.pttl(_mail_key(namespace, "mc", cancelled)) <= 60_000
    assert not raw.exists(_mail_key(namespace, "mc", deleted))


def test_an_expiry_sweep_wakes_every_receiver_with_session_not_found(
    open_redis: OpenFn, raw: redis.Redis, namespace: str
) -> None:
    clock = torpor.ManualClock()
    mgr = open_redis(clock=clock)
    s = mgr.create({}, timeout_ms=1000)
    consumers = [blocked_consumer(mgr, s.id) for _ in range(3)]
    _wait_until(_registered(raw, _mail_key(namespace, "mq", s), 3), "3 receivers counted")
    clock.advance(1001)
    assert mgr.cleanup_expired() == 1
    for thread, raised in consumers:
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert [type(e) for e in raised] == [torpor.SessionNotFound]


def test_mail_goes_with_its_session_and_never_reaches_the_id_created_again(
    open_redis: OpenFn, backend: RedisBackend, raw: redis.Redis, namespace: str
) -> None:
    mgr = open_redis(backend)
    mailbox = RedisMailbox(backend)
    old = mgr.create({}, session_id="again")
    mgr.send("again", "stale")
    mgr.send("again", "stale-priority", priority=True)
    lanes = [_mail_key(namespace, lane, old) for lane in ("mp", "mn")]
    assert raw.exists(*lanes) == 2
    assert mgr.delete("again")
    assert raw.exists(*lanes) == 0  # discarded in the step that removed the record
    assert not mailbox.send("again", old.incarnation, codec.encode_value("late"), False)
    assert raw.exists(*lanes) == 0  # a late send to the old life appends nothing
    new = mgr.create({}, session_id="again")
    assert new.incarnation != old.incarnation
    assert mgr.pending("again") == 0 and mgr.receive("again", max_messages=10) == []
    assert mailbox.pending("again", old.incarnation) == 0
    with pytest.raises(torpor.SessionNotFound):
        mailbox.receive("again", old.incarnation, 1, 0.0)
    mgr.send("again", "fresh")
    assert mgr.receive("again", max_messages=10) == ["fresh"]


def test_a_receiver_of_a_cancelled_incarnation_hears_cancelled_before_the_mark_lapses(
    open_redis: OpenFn, backend: RedisBackend
) -> None:
    mgr = open_redis(backend)
    mailbox = RedisMailbox(backend)
    s = mgr.create({})
    assert mgr.cancel(s.id)
    for timeout in (0.0, 5.0):  # whether or not it would wait
        with pytest.raises(torpor.SessionCancelled):
            mailbox.receive(s.id, s.incarnation, 1, timeout)


@pytest.mark.parametrize("removal", ["cancel", "delete"])
def test_a_receiver_whose_wake_up_went_missing_learns_of_the_removal_between_slices(
    open_redis: OpenFn, raw: redis.Redis, namespace: str, removal: str
) -> None:
    mgr = open_redis()
    s = mgr.create({})
    thread, raised = blocked_consumer(mgr, s.id)
    raw.delete(_mail_key(namespace, "mq", s))  # as if its count had lapsed: no wake-up
    assert getattr(mgr, removal)(s.id)
    thread.join(timeout=10)
    assert not thread.is_alive()
    expected = torpor.SessionCancelled if removal == "cancel" else torpor.SessionNotFound
    assert [type(e) for e in raised] == [expected]


def test_a_killed_receivers_count_lapses(
    open_redis: OpenFn, raw: redis.Redis, namespace: str, redis_standalone: Standalone
) -> None:
    mgr = open_redis()
    s = mgr.create({}, timeout_ms=None)
    child = _child(redis_standalone.url, namespace, "block", s.id)
    count = _mail_key(namespace, "mq", s)
    _wait_until(_registered(raw, count, 1), "the child blocked")
    child.kill()
    child.communicate(timeout=10)
    _wait_until(lambda: not raw.exists(count), "the count lapsed", timeout_s=5 * COUNT_TTL_MS)
    mgr.send(s.id, "kept")  # nothing was taken by the dead receiver's last slice
    assert mgr.receive(s.id) == ["kept"]


# -- close, and a lost server -------------------------------------------------------------


def test_close_wakes_a_blocked_receiver_with_client_unblock(
    open_redis: OpenFn, backend: RedisBackend, raw: redis.Redis
) -> None:
    mgr = open_redis(backend)
    mailbox = RedisMailbox(backend)  # a second mailbox of the same backend
    s = mgr.create({})
    before = _unblocks(raw)
    outcome: list[object] = []

    def receive() -> None:
        try:
            outcome.append(mailbox.receive(s.id, s.incarnation, 1, 1e300))
        except torpor.TorporError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=receive)
    thread.start()
    _wait_until(lambda: mailbox.waiters(s.id) == 1, "the receiver blocked")
    _wait_until(lambda: _blocked_clients(raw) >= 1, "the pop reached the server")
    mailbox.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert [type(e) for e in outcome] == [torpor.ManagerClosed]
    assert _unblocks(raw) > before  # woken by the server at once, not at a slice's end
    with pytest.raises(torpor.ManagerClosed):
        mailbox.receive(s.id, s.incarnation, 1, 0.0)
    mgr.send(s.id, "kept")  # a shared mailbox keeps its mail for other receivers
    assert mgr.receive(s.id) == ["kept"]


@pytest.mark.parametrize("denied", [["client|unblock"], ["client|unblock", "client|id"]])
def test_close_without_client_unblock_still_wakes_receivers(
    redis_standalone: Standalone, raw: redis.Redis, namespace: str, denied: list[str]
) -> None:
    # A user may not run CLIENT UNBLOCK (it is also in @admin): receivers then end
    # with their slice; a user denied CLIENT ID too never asks for its id.
    user = f"mbx-{uuid.uuid4().hex[:12]}"
    raw.acl_setuser(
        user, enabled=True, passwords=["+pw"], keys=["*"],
        commands=["+@read", "+@write", "+@scripting", "+@connection", "+info",
                  *(f"-{c}" for c in denied)],
    )  # fmt: skip
    url = redis_standalone.url.replace("redis://", f"redis://{user}:pw@")
    mgr = torpor.open(
        create_backend(url=url, namespace=namespace), clock=torpor.ManualClock(), sweeper=False
    )
    try:
        s = mgr.create({})
        received: list[list[Any]] = []
        first, first_raised = blocked_consumer(mgr, s.id, received=received)
        mgr.send(s.id, "delivered all the same")  # a pop without its CLIENT ID works
        first.join(timeout=10)
        assert (received, first_raised) == ([["delivered all the same"]], [])
        before = _unblocks(raw)
        thread, raised = blocked_consumer(mgr, s.id)
        mgr.close()
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert [type(e) for e in raised] == [torpor.ManagerClosed]
        assert _unblocks(raw) == before
    finally:
        mgr.close()
        raw.acl_deluser(user)


def _unblocks(raw: redis.Redis) -> int:
    stats = raw.info("commandstats")
    return int(stats.get("cmdstat_client|unblock", {}).get("calls", 0))


def _blocked_clients(raw: redis.Redis) -> int:
    return int(raw.info("clients")["blocked_clients"])


def test_a_server_lost_under_a_blocked_receiver_raises_backend_unavailable(
    redis_binary: ServerBinary, namespace: str
) -> None:
    with standalone(redis_binary.path) as server:
        mgr = torpor.open(
            create_backend(url=server.url, namespace=namespace, retries=0),
            clock=torpor.ManualClock(),
            sweeper=False,
        )
        try:
            s = mgr.create({})
            thread, raised = blocked_consumer(mgr, s.id)
            server.server.kill()
            thread.join(timeout=30)
            assert not thread.is_alive()
            assert [type(e) for e in raised] == [torpor.BackendUnavailable], raised
            assert isinstance(raised[0].__cause__, redis.exceptions.RedisError)
        finally:
            mgr.close()


def test_receivers_drain_a_server_that_is_out_of_memory(
    redis_binary: ServerBinary, namespace: str
) -> None:
    with standalone(redis_binary.path, config=["maxmemory 8mb"]) as server:
        mgr = torpor.open(
            create_backend(url=server.url, namespace=namespace),
            clock=torpor.ManualClock(),
            sweeper=False,
        )
        try:
            full, empty = mgr.create({}), mgr.create({})
            assert _send_until_refused(mgr, full.id) > 100
            # While the server is full: a wait (joining, refreshing and leaving the
            # count of receivers) and takes.
            assert mgr.receive(empty.id, max_messages=5, timeout=0.3) == []
            taken = mgr.receive(full.id, max_messages=10)
            assert [m[0] for m in taken] == list(range(10))
        finally:
            mgr.close()


def _send_until_refused(mgr: torpor.Manager, session_id: str) -> int:
    """Send 4 kB messages until the server refuses one for lack of memory (bounded:
    the server's maxmemory is small); how many it took."""
    sent, refused = 0, None
    while refused is None:
        try:
            mgr.send(session_id, [sent, "x" * 4000])
            sent += 1
        except torpor.BackendUnavailable as exc:
            refused = exc
    assert "maxmemory" in str(refused), refused
    return sent


# -- Cluster ------------------------------------------------------------------------------


def test_on_a_cluster_mail_flows_in_every_bucket_and_removals_wake_receivers(
    redis_cluster: Cluster, namespace: str
) -> None:
    backend = create_backend(url=redis_cluster.url, cluster=True, namespace=namespace)
    mgr = torpor.open(backend, clock=torpor.ManualClock(), sweeper=False)
    keys = backend.keys
    try:
        # One session per bucket: every primary holds some buckets.
        by_bucket: dict[int, torpor.Session] = {}
        while len(by_bucket) < keys.count:
            s = mgr.create({}, timeout_ms=None)
            by_bucket.setdefault(keys.bucket_of(s.id.encode()).index, s)
        for s in by_bucket.values():
            mgr.send(s.id, "n")
            mgr.send(s.id, "p", priority=True)
        assert all(mgr.pending(s.id) == 2 for s in by_bucket.values())
        assert all(mgr.receive(s.id, max_messages=5) == ["p", "n"] for s in by_bucket.values())
        sessions = list(by_bucket.values())
        waiting = [blocked_consumer(mgr, s.id) for s in sessions[:4]]
        received: list[list[Any]] = []
        last, last_raised = blocked_consumer(mgr, sessions[4].id, received=received)
        assert mgr.cancel(sessions[0].id) and mgr.delete(sessions[1].id)
        mgr.send(sessions[2].id, "hello")
        mgr.send(sessions[4].id, "hello")
        *woken, (still, still_raised) = waiting
        outcomes = []
        for thread, raised in [*woken, (last, last_raised)]:
            thread.join(timeout=10)
            assert not thread.is_alive()
            outcomes.append([type(e).__name__ for e in raised])
        assert outcomes == [["SessionCancelled"], ["SessionNotFound"], [], []]
        assert received == [["hello"]]
        assert still.is_alive()  # nothing happened to its session
        mgr.close()
        still.join(timeout=10)
        assert not still.is_alive() and [type(e) for e in still_raised] == [torpor.ManagerClosed]
    finally:
        mgr.close()
