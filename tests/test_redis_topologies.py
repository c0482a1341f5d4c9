"""The redis backend on each topology, through outages: a Sentinel failover by SIGKILL
of the primary (the manager follows the promoted replica; with ``wait_replicas=1`` no
acknowledged write is lost), a server restarted mid-run (typed errors meanwhile,
recovery without reopening), and a Cluster whose sessions spread over every primary.

Real servers from tests/servers; time from ManualClock.  Waiting for a failover or a
restart is a bounded poll of the real event, never a fixed sleep."""

from __future__ import annotations

import re
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis
from redis.cluster import LoadBalancingStrategy, RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException
from redis.sentinel import Sentinel

import torpor
from tests.servers import (
    Cluster,
    SentinelSetup,
    ServerBinary,
    Standalone,
    sentinel,
    standalone,
)
from tests.servers.ports import HOST
from tests.servers.waiting import wait_until
from torpor.errors import BackendUnavailable, ConfigError
from torpor.plugins.redis import RedisBackend, create_backend
from torpor.plugins.redis._config import (
    BLOCKING_SOCKET_TIMEOUT,
    SentinelBlockingPool,
    check_server,
)
from torpor.plugins.redis._errors import translated
from torpor.plugins.redis._keys import Keys

FAILOVER_TIMEOUT = 15.0  # seconds for the sentinel to promote the replica (about 2)
# Fast failure detection: the sentinel calls the primary down after 0.5 s of silence.
FAST_SENTINEL: dict[str, Any] = {"down_after_ms": 500, "failover_timeout_ms": 3000}


def _namespace() -> str:
    return f"topo-{uuid.uuid4().hex[:12]}"


def _timed_out(what: str) -> Callable[[float], Exception]:
    return lambda timeout: AssertionError(f"{what}: not within {timeout} s")


def _typed_only(call: Callable[[], object]) -> BaseException | None:
    """Run ``call``; None if it worked, the BackendUnavailable it raised otherwise.
    Any other exception (a raw redis-py one above all) propagates and fails the test."""
    failed: BackendUnavailable | None = None
    try:
        call()
    except BackendUnavailable as exc:
        failed = exc
    if failed is not None:  # the redis-py error stays as the cause, for the logs
        assert isinstance(failed.__cause__, redis.RedisError | RedisClusterException), failed
    return failed


# -- Sentinel failover -----------------------------------------------------------------


def _sentinel_backend(setup: SentinelSetup, namespace: str, **options: Any) -> RedisBackend:
    return create_backend(
        sentinels=setup.sentinels,
        service_name=setup.service_name,
        namespace=namespace,
        **options,
    )


def _open(backend: RedisBackend, clock: torpor.ManualClock | None = None) -> torpor.Manager:
    return torpor.open(backend, clock=clock or torpor.ManualClock(), sweeper=False)


def _promoted(setup: SentinelSetup) -> bool:
    return setup.primary_address() == (HOST, setup.replica.port)


def test_the_manager_follows_a_sentinel_failover(redis_binary: ServerBinary) -> None:
    namespace = _namespace()
    with sentinel(redis_binary.path, **FAST_SENTINEL) as setup:
        backend = _sentinel_backend(setup, namespace)
        assert repr(backend).startswith(f"RedisBackend(sentinel service {setup.service_name!r}")
        with _open(backend) as mgr:
            before = [mgr.create({"n": i}).id for i in range(50)]
            with setup.primary.client() as conn:  # replication is asynchronous without
                assert conn.execute_command("WAIT", 1, 5000) == 1  # wait_replicas
            setup.primary.kill()
            failures: list[BaseException] = []
            created: list[str] = []  # the writes that worked during the poll

            def works() -> bool:
                # Reads and writes alike: each raises BackendUnavailable or works.
                for call in (
                    lambda: mgr.peek(before[0]),
                    lambda: created.append(mgr.create({"after": 1}).id),
                    lambda: mgr.receive(before[0], timeout=0.05),  # the blocking client
                ):
                    failed = _typed_only(call)
                    if failed is not None:
                        failures.append(failed)
                        return False
                return True

            wait_until(works, FAILOVER_TIMEOUT, _timed_out("calls working after the failover"))
            assert _promoted(setup)  # the manager did not reopen: it followed the sentinel
            assert failures, "no call failed: the primary was killed, some call must have"
            written = mgr.create({"on": "the promoted replica"})
            assert sorted(s.id for s in mgr.sessions()) == sorted([*before, *created, written.id])
        with setup.replica.client() as conn:
            assert conn.info("replication")["role"] == "master"
            record = Keys(namespace).record(written.id.encode())
            assert conn.exists(record) == 1  # the write landed on the promoted replica


def test_with_wait_replicas_no_acknowledged_write_is_lost_in_a_failover(
    redis_binary: ServerBinary,
) -> None:
    """A writer thread creates sessions without pause while the primary is killed
    under it: every create that returned (acknowledged by the replica through WAIT)
    must be readable on the promoted replica, whatever the moment of the kill."""
    namespace = _namespace()
    with sentinel(redis_binary.path, **FAST_SENTINEL) as setup:
        mgr = _open(_sentinel_backend(setup, namespace, wait_replicas=1, wait_timeout_ms=500))
        acknowledged: list[str] = []
        attempted: list[str] = []  # failed creates: applied or not, never acknowledged
        raw: list[BaseException] = []
        stop = threading.Event()

        def write() -> None:
            i = 0
            while not stop.is_set():
                sid = f"w{i}"
                i += 1
                try:
                    mgr.create({"i": i}, session_id=sid)
                except BackendUnavailable:
                    attempted.append(sid)
                except BaseException as exc:  # reported below
                    raw.append(exc)
                    return
                else:
                    acknowledged.append(sid)

        with mgr:
            writer = threading.Thread(target=write, name="failover-writer")
            writer.start()
            try:
                wait_until(lambda: len(acknowledged) >= 200, 10, _timed_out("200 writes"))
                setup.primary.kill()
                # Writes keep failing after the promotion (the new primary has no
                # replica left to acknowledge them): stop at the first one after it.
                wait_until(
                    lambda: _promoted(setup) and len(attempted) > 0,
                    FAILOVER_TIMEOUT,
                    _timed_out("the failover"),
                )
            finally:
                stop.set()
                writer.join()
            assert not raw, f"a raw exception reached the writer: {raw[0]!r}"
            assert attempted, "the kill did not interrupt the writer"
            wait_until(lambda: _typed_only(lambda: mgr.peek("w0")) is None, FAILOVER_TIMEOUT,
                       _timed_out("reads on the promoted replica"))  # fmt: skip
            stored = set(mgr.ids())
            missing = [sid for sid in acknowledged if sid not in stored]
            assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged writes lost"
            assert stored <= set(acknowledged) | set(attempted)
            assert all(mgr.peek(sid) is not None for sid in acknowledged)


def test_wait_replicas_refuses_a_write_no_replica_acknowledged(
    redis_standalone: Standalone,
) -> None:
    # A lone server has no replica: WAIT 1 times out, and the write is not acknowledged.
    backend = create_backend(
        url=redis_standalone.url, namespace=_namespace(), wait_replicas=1, wait_timeout_ms=50
    )
    with _open(backend) as mgr:
        with pytest.raises(BackendUnavailable, match="replica"):
            mgr.create({}, session_id="unacknowledged")
        assert mgr.peek("nobody") is None  # reads wait for nothing


# -- server restart --------------------------------------------------------------------


def _calls(mgr: torpor.Manager, sid: str) -> dict[str, Callable[[], object]]:
    """One of each kind of call a user makes."""
    return {
        "create": lambda: mgr.create({}),
        "get": lambda: mgr.get(sid),
        "peek": lambda: mgr.peek(sid),
        "update": lambda: mgr.update(sid, lambda d: {**d, "u": 1}),
        "delete": lambda: mgr.delete("no-such-session"),
        "ids": lambda: list(mgr.ids()),
        "sessions": lambda: list(mgr.sessions()),
        "cleanup_expired": mgr.cleanup_expired,
        "hibernate_idle": lambda: mgr.hibernate_idle(1),
        "stats": mgr.stats,
        "send": lambda: mgr.send(sid, "mail"),
        "pending": lambda: mgr.pending(sid),
        "receive": lambda: mgr.receive(sid, max_messages=10, timeout=0.05),
    }


@pytest.mark.parametrize("persistence", [True, False], ids=["aof", "no-persistence"])
def test_a_restarted_server_gives_typed_errors_then_recovers(
    redis_binary: ServerBinary, persistence: bool
) -> None:
    # appendfsync always: a write is on disk before its reply, so a SIGKILL loses none.
    config = ["appendonly yes", "appendfsync always"] if persistence else []
    clock = torpor.ManualClock()
    with standalone(redis_binary.path, config=config) as server:
        backend = create_backend(url=server.url, namespace=_namespace(), retries=1)
        with torpor.open(backend, clock=clock, sweeper=False) as mgr:
            before = [mgr.create({"n": i}, timeout_ms=60_000).id for i in range(100)]
            server.server.kill()
            for name, call in _calls(mgr, before[0]).items():
                assert _typed_only(call) is not None, f"{name} worked on a dead server"
            server.server.start()  # the same port: the manager is not reopened
            with server.server.client() as admin:
                library = admin.function_list()
            if persistence:
                assert library, "the AOF keeps the FUNCTION library"
                assert sorted(mgr.ids()) == sorted(before)
                assert mgr.update(before[0], lambda d: {**d, "n": -1}).data == {"n": -1}
                target = before[0]
            else:
                # Documented: a server without persistence comes back empty, the
                # library included; the first write loads it again.
                assert library == [] and list(mgr.ids()) == []
                target = mgr.create({"fresh": True}).id
            for name, call in _calls(mgr, target).items():
                assert _typed_only(call) is None, f"{name} failed after the restart"
            with server.server.client() as admin:
                assert admin.function_list(), "the library is loaded again"
            clock.advance(120_000)
            assert mgr.cleanup_expired() == (len(before) if persistence else 0)


# -- Cluster: buckets spread over every primary ---------------------------------------


def _owner(cluster: Cluster, key: bytes) -> int:
    """The port of the primary whose slot range holds ``key``."""
    slot = key_slot(key)
    for node, (first, last) in zip(cluster.nodes, cluster.slot_ranges, strict=True):
        if first <= slot <= last:
            return node.port
    raise AssertionError(f"slot {slot} has no owner")


def _on_nodes(cluster: Cluster, keys: Keys, ids: list[str]) -> dict[int, tuple[int, int]]:
    """Per primary's port: (records of ``ids`` its slot range holds, how many of those
    exist on the node itself, asked directly, without a redirect)."""
    by_node: dict[int, list[bytes]] = {}
    for sid in ids:
        record = keys.record(sid.encode())
        by_node.setdefault(_owner(cluster, record), []).append(record)
    out = {}
    for node in cluster.nodes:
        records = by_node.get(node.port, [])
        with node.client() as conn:
            pipe = conn.pipeline(transaction=False)
            for record in records:  # one EXISTS each: a multi-key one would be CROSSSLOT
                pipe.exists(record)
            out[node.port] = (len(records), sum(pipe.execute()))
    return out


def _spread(cluster: Cluster, keys: Keys, ids: list[str]) -> Counter[int]:
    """How many of ``ids`` each primary holds, checked on the node itself, not only
    computed from the slot map."""
    counts: Counter[int] = Counter()
    for port, (mapped, found) in _on_nodes(cluster, keys, ids).items():
        assert found == mapped, f"the node on port {port} lacks records its slots hold"
        if found:
            counts[port] = found
    return counts


def test_cluster_sessions_spread_over_every_primary_and_every_walk_covers_them(
    redis_cluster: Cluster,
) -> None:
    backend = create_backend(url=redis_cluster.url, cluster=True, namespace=_namespace())
    clock = torpor.ManualClock()
    with _open(backend, clock) as mgr:
        _spread_walk_find_and_sweep(redis_cluster, backend, mgr, clock)


def _spread_walk_find_and_sweep(
    redis_cluster: Cluster, backend: RedisBackend, mgr: torpor.Manager, clock: torpor.ManualClock
) -> None:
    assert backend.keys.count == 16  # the Cluster default
    mgr.create_index("team")
    created = [mgr.create({"team": i % 4}, timeout_ms=60_000).id for i in range(2000)]
    counts = _spread(redis_cluster, backend.keys, created)
    assert set(counts) == set(redis_cluster.ports)
    assert min(counts.values()) >= 2000 * 0.2, counts  # 16 buckets over 3 ranges: ~1/3 each

    walked = Counter(mgr.ids())
    assert set(walked) == set(created) and set(walked.values()) == {1}  # exactly once
    assert Counter(s.id for s in mgr.sessions(batch_size=100)) == walked

    team1 = mgr.find(team=1)
    assert sorted(s.id for s in team1) == sorted(created[1::4])
    assert set(_spread(redis_cluster, backend.keys, [s.id for s in team1])) == set(
        redis_cluster.ports
    )

    clock.advance(120_000)
    assert mgr.cleanup_expired() == 2000  # the sweep reached every node
    left = _on_nodes(redis_cluster, backend.keys, created)
    assert all(found == 0 for _, found in left.values()), left


def test_cross_slot_errors_never_reach_a_user_raw(redis_cluster: Cluster) -> None:
    """A command over two slots would be a torpor bug (its key layout prevents it):
    whether the server refuses it (CROSSSLOT, a RedisError) or redis-py does before
    sending (CrossSlotTransactionError, not a RedisError), the user gets a typed error
    that says so."""
    a, b = b"{a}x", b"{b}x"
    assert key_slot(a) != key_slot(b)
    owner = next(n for n in redis_cluster.nodes if n.port == _owner(redis_cluster, a))
    with (
        owner.client() as node,
        pytest.raises(BackendUnavailable, match="torpor bug") as caught,
        translated("test"),
    ):
        node.mget(a, b)  # one node, two slots: the server says CROSSSLOT
    assert "CROSSSLOT" in str(caught.value)
    with RedisCluster.from_url(redis_cluster.url) as client:
        pipe = client.pipeline(transaction=True)
        pipe.set(a, 1)
        pipe.set(b, 1)
        with pytest.raises(BackendUnavailable, match="torpor bug") as refused, translated("t"):
            pipe.execute()
        assert isinstance(refused.value.__cause__, RedisClusterException)
        assert not isinstance(refused.value.__cause__, redis.RedisError)


def test_reopening_a_cluster_namespace_with_another_bucket_count_is_refused(
    redis_cluster: Cluster,
) -> None:
    namespace = _namespace()
    first = create_backend(url=redis_cluster.url, cluster=True, namespace=namespace, buckets=8)
    first.torpor_close(urgent=False)
    with pytest.raises(ConfigError, match="buckets"):
        create_backend(url=redis_cluster.url, cluster=True, namespace=namespace, buckets=16)
    again = create_backend(url=redis_cluster.url, cluster=True, namespace=namespace)
    assert again.keys.count == 8  # no buckets=: the stored count
    again.torpor_close(urgent=False)


def test_a_users_cluster_client_is_used_as_it_is_and_left_open(redis_cluster: Cluster) -> None:
    with RedisCluster.from_url(redis_cluster.url) as mine:
        backend = create_backend(client=mine, namespace=_namespace())
        assert repr(backend).startswith("RedisBackend(cluster ")
        with _open(backend) as mgr:
            created = [mgr.create({"i": i}).id for i in range(300)]
            assert set(_spread(redis_cluster, backend.keys, created)) == set(redis_cluster.ports)
            assert sorted(mgr.ids()) == sorted(created)
            for sid in created:
                mgr.delete(sid)
        assert mine.ping()  # torpor closed its manager, not the user's client


def test_a_users_cluster_client_reading_replicas_is_refused(redis_cluster: Cluster) -> None:
    strategy = LoadBalancingStrategy.ROUND_ROBIN_REPLICAS
    with RedisCluster.from_url(redis_cluster.url, load_balancing_strategy=strategy) as theirs:
        with pytest.raises(ConfigError, match="replicas"):
            create_backend(client=theirs)
        assert theirs.ping()


def test_the_cluster_clients_torpor_builds_read_from_primaries_only(
    redis_cluster: Cluster,
) -> None:
    backend = create_backend(url=redis_cluster.url, cluster=True, namespace=_namespace())
    try:
        for client in (backend.client, backend.blocking_client()):
            assert isinstance(client, RedisCluster)
            assert not client.read_from_replicas and client.load_balancing_strategy is None
            for node in client.get_primaries():  # type: ignore[no-untyped-call]
                pool = node.redis_connection.connection_pool
                assert isinstance(pool, redis.BlockingConnectionPool)  # bounded, waits
                assert pool.max_connections == 32
        assert backend.blocking_client() is not backend.client
        assert backend.blocking_client().retry.get_retries() == 0  # type: ignore[union-attr]
    finally:
        backend.torpor_close(urgent=False)


def test_a_cluster_node_opened_as_a_single_server_or_the_reverse_is_refused(
    redis_cluster: Cluster, redis_standalone: Standalone
) -> None:
    # A namespace whose slot another node serves: the url's node answers MOVED.
    namespace = next(
        ns
        for ns in (_namespace() for _ in range(1000))
        if _owner(redis_cluster, Keys(ns).meta) != redis_cluster.ports[0]
    )
    with pytest.raises(ConfigError, match="cluster=True"):
        create_backend(url=redis_cluster.url, namespace=namespace)
    with pytest.raises(ConfigError, match="not a Cluster node"):
        create_backend(url=redis_standalone.url, cluster=True, namespace=_namespace())


def test_the_server_check_refuses_a_mode_the_client_does_not_match() -> None:
    info = {"redis_version": "7.2.4", "maxmemory_policy": "noeviction"}
    check_server({**info, "redis_mode": "cluster"}, "h:1", cluster=True)
    check_server({**info, "redis_mode": "standalone"}, "h:1", cluster=False)
    check_server({**info, "redis_mode": "cluster"}, "h:1")  # mode unknown to the caller
    with pytest.raises(ConfigError, match="open it with cluster=True"):
        check_server({**info, "redis_mode": "cluster"}, "h:1", cluster=False)
    with pytest.raises(ConfigError, match="drop cluster=True"):
        check_server({**info, "redis_mode": "standalone"}, "h:1", cluster=True)


# -- how each topology's clients are built --------------------------------------------


def test_the_sentinel_clients_are_bounded_and_closed_with_the_sentinel_links(
    redis_binary: ServerBinary,
) -> None:
    with sentinel(redis_binary.path) as setup:
        backend = _sentinel_backend(setup, _namespace(), max_connections=1, pool_timeout=0.05)
        main, blocking = backend.client, backend.blocking_client()
        assert isinstance(main, redis.Redis) and isinstance(blocking, redis.Redis)
        assert main is not blocking
        for client in (main, blocking):
            pool = client.connection_pool
            assert isinstance(pool, SentinelBlockingPool) and pool.is_master  # never a replica
            held = pool.get_connection()
            try:  # past the bound a caller waits pool_timeout, then gets a typed refusal
                with pytest.raises(redis.ConnectionError, match="No connection available"):
                    pool.get_connection()
            finally:
                pool.release(held)
        assert blocking.get_connection_kwargs()["socket_timeout"] >= BLOCKING_SOCKET_TIMEOUT
        assert blocking.get_retry().get_retries() == 0  # type: ignore[union-attr]

        def our_links() -> int:  # the sentinel's clients, but the one asking
            with setup.sentinel.client() as conn:
                return len(conn.client_list()) - 1

        assert our_links() >= 1
        backend.torpor_close(urgent=False)
        wait_until(lambda: our_links() == 0, 5, _timed_out("the sentinel links closing"))


def test_a_users_sentinel_client_must_talk_to_the_primary(redis_binary: ServerBinary) -> None:
    with sentinel(redis_binary.path) as setup:
        sentinels = Sentinel(setup.sentinels)  # type: ignore[no-untyped-call]
        name = setup.service_name
        replica = sentinels.slave_for(name)  # type: ignore[no-untyped-call]
        with pytest.raises(ConfigError, match="primary"):
            create_backend(client=replica)
        primary = sentinels.master_for(name)  # type: ignore[no-untyped-call]
        backend = create_backend(client=primary, namespace=_namespace())
        assert repr(backend).startswith(f"RedisBackend(sentinel service {name!r}")
        backend.torpor_close(urgent=False)
        assert primary.ping()  # the user's client stays open
        primary.close()
        replica.close()


def test_the_standalone_clients_are_bounded_and_the_blocking_one_never_retries(
    redis_standalone: Standalone,
) -> None:
    backend = create_backend(url=redis_standalone.url, namespace=_namespace(), retries=2)
    try:
        main, blocking = backend.client, backend.blocking_client()
        assert isinstance(main, redis.Redis) and isinstance(blocking, redis.Redis)
        assert main.connection_pool is not blocking.connection_pool
        for client in (main, blocking):
            assert isinstance(client.connection_pool, redis.BlockingConnectionPool)
        assert main.get_retry().get_retries() == 2  # type: ignore[union-attr]
        assert blocking.get_retry().get_retries() == 0  # type: ignore[union-attr]
        assert main.get_connection_kwargs()["protocol"] == 2
        assert blocking.get_connection_kwargs()["socket_timeout"] >= BLOCKING_SOCKET_TIMEOUT
    finally:
        backend.torpor_close(urgent=False)


def test_a_unix_socket_url(redis_binary: ServerBinary) -> None:
    with tempfile.TemporaryDirectory(prefix="torpor-") as folder:  # short: sun_path limit
        path = f"{folder}/redis.sock"
        with standalone(redis_binary.path, config=[f"unixsocket {path}"]):
            backend = create_backend(url=f"unix://{path}?db=0", namespace=_namespace())
            assert repr(backend).startswith(f"RedisBackend(unix://{path}")
            with _open(backend) as mgr:
                s = mgr.create({"via": "unix"})
                assert mgr.get(s.id).data == {"via": "unix"}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({}, "exactly one of"),
        ({"url": "redis://h", "sentinels": [("h", 1)]}, "exactly one of"),
        ({"url": "http://h"}, "url"),
        ({"url": "unix:///tmp/r.sock", "cluster": True}, "unix://"),
        ({"url": "redis://h", "cluster": "maybe"}, "cluster"),
        ({"sentinels": [("h", 1)], "cluster": True}, "cluster=True"),
        ({"sentinels": [("h", 1)]}, "service_name"),
        ({"sentinels": [], "service_name": "s"}, "sentinels"),
        ({"sentinels": [("h", 0)], "service_name": "s"}, "sentinels"),
        ({"sentinels": "h", "service_name": "s"}, "sentinels"),
        ({"url": "redis://h", "service_name": "s"}, "service_name"),
        ({"url": "redis://h", "sentinel_password": "x"}, "sentinel_password"),
        ({"client": "redis://h"}, "redis.Redis"),
        ({"client": redis.Redis(), "password": "x"}, "password"),
        ({"client": redis.Redis(), "socket_timeout": 1}, "socket_timeout"),
        ({"client": redis.Redis(decode_responses=True)}, "decode"),
        ({"url": "redis://h", "buckets": 0}, "buckets"),
        ({"url": "redis://h", "buckets": "many"}, "buckets"),
        ({"url": "redis://h", "wait_replicas": -1}, "wait_replicas"),
        ({"url": "redis://h", "wait_timeout_ms": 0}, "wait_timeout_ms"),
        ({"url": "redis://h", "socket_timeout": 0}, "socket_timeout"),
        ({"url": "redis://h", "pool_timeout": True}, "pool_timeout"),
        ({"url": "redis://h", "max_connections": 0}, "max_connections"),
        ({"url": "redis://h", "retries": -1}, "retries"),
    ],
)
def test_bad_options_are_config_errors_naming_the_option(
    options: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        create_backend(**options)


def test_sentinel_addresses_may_be_text(redis_binary: ServerBinary) -> None:
    # From an env var or a TOML file the addresses come as text.
    with sentinel(redis_binary.path) as setup:
        ((host, port),) = setup.sentinels
        backend = create_backend(
            sentinels=f"{host}:{port}", service_name=setup.service_name, namespace=_namespace()
        )
        assert f"via {host}:{port}" in repr(backend)
        backend.torpor_close(urgent=False)
