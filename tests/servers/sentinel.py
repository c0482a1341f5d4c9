"""A primary, one replica and one Sentinel monitoring them (quorum 1)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from tests.servers.auth import Auth
from tests.servers.ports import HOST
from tests.servers.process import STOP_TIMEOUT, ServerProcess, ServerStartError, base_config
from tests.servers.version import ServerVersion, server_version
from tests.servers.waiting import wait_until
from tests.servers.workspace import Workspace

SERVICE_NAME = "torpor"
READY_TIMEOUT = 15.0  # seconds for the replica to sync and the sentinel to see it


@dataclass(frozen=True)
class SentinelSetup:
    primary: ServerProcess  # the primary at start; after a failover, the replica is
    replica: ServerProcess
    sentinel: ServerProcess
    service_name: str
    version: ServerVersion
    host: str = HOST
    auth: Auth | None = None  # the data servers'
    sentinel_auth: Auth | None = None  # the sentinel's own

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [(self.host, self.sentinel.port)]

    @property
    def servers(self) -> tuple[ServerProcess, ...]:
        return (self.primary, self.replica, self.sentinel)

    @property
    def pids(self) -> list[int]:
        return [server.pid for server in self.servers if server.pid is not None]

    def primary_address(self) -> tuple[str, int]:
        """The primary as the sentinel names it now (``get-master-addr-by-name``)."""
        with self.sentinel.client() as conn:
            host, port = conn.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", self.service_name)
        return str(host), int(port)


@contextmanager
def sentinel(
    binary: Path,
    *,
    service_name: str = SERVICE_NAME,
    down_after_ms: int = 1000,
    failover_timeout_ms: int = 5000,
    config: Sequence[str] = (),
    auth: Auth | None = None,
    sentinel_auth: Auth | None = None,
    stop_timeout: float = STOP_TIMEOUT,
) -> Iterator[SentinelSetup]:
    """Ready when the replica's link is up, it acknowledges the primary's stream, and the
    sentinel lists it as a healthy replica, so ``SENTINEL FAILOVER`` (or killing the
    primary) has a candidate at once, and a write the replica acknowledged survives.
    ``config`` lines go to both data servers; ``auth`` protects both (the replica and
    the sentinel are told the password), ``sentinel_auth`` the sentinel itself."""
    if sentinel_auth is not None and sentinel_auth.username is not None:
        raise ValueError("sentinel_auth: a sentinel takes a password only (requirepass)")
    data_options = auth.client_options() if auth is not None else {}
    with Workspace(binary, stop_timeout=stop_timeout) as space:

        def data_lines(ports: Sequence[int], folder: Path) -> list[str]:
            protect = auth.server_config() if auth is not None else []
            return [*base_config(ports[0], folder), *protect, *config]

        primary = space.start("primary", data_lines, client_options=data_options)

        def replica_lines(ports: Sequence[int], folder: Path) -> list[str]:
            sync = auth.replica_config() if auth is not None else []
            return [*data_lines(ports, folder), *sync, f"replicaof {HOST} {primary.port}"]

        replica = space.start("replica", replica_lines, client_options=data_options)
        _wait(lambda: _link_up(replica), "the replica's link to the primary", [replica, primary])
        # After a diskless full sync, Redis 7.0 holds the stream back until the replica's
        # first REPLCONF ACK (up to a second later): a primary killed meanwhile takes its
        # latest writes with it, although the replica already reports its link up.
        _wait(lambda: _acknowledges(primary), "the replica to acknowledge", [replica, primary])

        def sentinel_lines(ports: Sequence[int], folder: Path) -> list[str]:
            return [
                *base_config(ports[0], folder),
                f"sentinel monitor {service_name} {HOST} {primary.port} 1",
                f"sentinel down-after-milliseconds {service_name} {down_after_ms}",
                f"sentinel failover-timeout {service_name} {failover_timeout_ms}",
                *(auth.sentinel_config(service_name) if auth is not None else []),
                *(sentinel_auth.server_config() if sentinel_auth is not None else []),
            ]

        watcher = space.start(
            "sentinel",
            sentinel_lines,
            sentinel=True,
            client_options=sentinel_auth.client_options() if sentinel_auth is not None else None,
        )
        _wait(
            lambda: _sees_replica(watcher, service_name, replica.port),
            "the sentinel to list the replica as healthy",
            [watcher, replica, primary],
        )
        with primary.client() as conn:
            version = server_version(conn)
        yield SentinelSetup(
            primary, replica, watcher, service_name, version, auth=auth, sentinel_auth=sentinel_auth
        )


def _wait(check: Callable[[], bool], what: str, servers: Sequence[ServerProcess]) -> None:
    def failure(timeout: float) -> Exception:
        tails = "\n".join(f"--- {s!r} log tail ---\n{s.log_tail()}" for s in servers)
        return ServerStartError(f"timed out after {timeout} s waiting for {what}\n{tails}")

    wait_until(check, READY_TIMEOUT, failure)


def _link_up(replica: ServerProcess) -> bool:
    try:
        with replica.client() as conn:
            return bool(conn.info("replication").get("master_link_status") == "up")
    except redis.RedisError:
        return False


def _acknowledges(primary: ServerProcess) -> bool:
    """``WAIT``: the replica acknowledged everything the primary has streamed so far."""
    try:
        with primary.client() as conn:
            return bool(conn.execute_command("WAIT", 1, 100) == 1)
    except redis.RedisError:
        return False


def _sees_replica(watcher: ServerProcess, service_name: str, port: int) -> bool:
    try:
        with watcher.client() as conn:
            replicas = conn.execute_command("SENTINEL REPLICAS", service_name)
    except redis.RedisError:
        return False
    for entry in replicas:
        fields = _fields(entry)
        if fields.get("port") == str(port):
            return fields.get("flags") == "slave" and fields.get("master-link-status") == "ok"
    return False


def _fields(entry: Any) -> dict[str, str]:
    """A ``SENTINEL REPLICAS`` entry as a dict: a flat list on RESP2, a map on RESP3."""
    if isinstance(entry, dict):
        return {str(k): str(v) for k, v in entry.items()}
    return {str(entry[i]): str(entry[i + 1]) for i in range(0, len(entry), 2)}
