"""A Redis Cluster of primaries only, its 16384 slots split evenly over them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from tests.servers.auth import Auth
from tests.servers.ports import HOST
from tests.servers.process import STOP_TIMEOUT, ServerProcess, ServerStartError, base_config
from tests.servers.version import ServerVersion, server_version
from tests.servers.waiting import wait_until
from tests.servers.workspace import Workspace

SLOTS = 16384
READY_TIMEOUT = 20.0  # seconds for every node to see the whole cluster


@dataclass(frozen=True)
class Cluster:
    nodes: tuple[ServerProcess, ...]  # the primaries, in slot order
    slot_ranges: tuple[tuple[int, int], ...]  # (first, last) slot of each node
    version: ServerVersion
    host: str = HOST
    auth: Auth | None = None

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(self.host, port) for port in self.ports]

    @property
    def url(self) -> str:
        """The first node's, with the credentials if any."""
        userinfo = self.auth.userinfo() if self.auth is not None else ""
        return f"redis://{userinfo}{self.host}:{self.ports[0]}/0"

    @property
    def servers(self) -> tuple[ServerProcess, ...]:
        return self.nodes

    @property
    def pids(self) -> list[int]:
        return [node.pid for node in self.nodes if node.pid is not None]


def slot_ranges(primaries: int) -> list[tuple[int, int]]:
    bounds = [SLOTS * i // primaries for i in range(primaries + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(primaries)]


@contextmanager
def cluster(
    binary: Path,
    primaries: int = 3,
    *,
    config: Sequence[str] = (),
    auth: Auth | None = None,
    stop_timeout: float = STOP_TIMEOUT,
) -> Iterator[Cluster]:
    """``primaries`` nodes, each with its slot range, introduced to each other by
    ``CLUSTER MEET``; ready when every node reports ``cluster_state:ok`` and knows all.
    ``auth`` protects every node."""
    if primaries < 1:
        raise ValueError("a cluster needs at least one primary")
    with Workspace(binary, stop_timeout=stop_timeout) as space:

        def lines(ports: Sequence[int], folder: Path) -> list[str]:
            return [
                *base_config(ports[0], folder),
                "cluster-enabled yes",
                "cluster-config-file nodes.conf",
                # Explicit, so the bus port is a free one too (the default is port + 10000).
                f"cluster-port {ports[1]}",
                # Nodes learn their own address from peers otherwise; say it up front.
                f"cluster-announce-ip {HOST}",
                "cluster-node-timeout 5000",
                *(auth.server_config() if auth is not None else []),
                *config,
            ]

        options = auth.client_options() if auth is not None else None
        nodes = tuple(
            space.start("cluster", lines, port_count=2, client_options=options)
            for _ in range(primaries)
        )
        ranges = slot_ranges(primaries)
        bus_ports = [_bus_port(node) for node in nodes]
        for node, (first, last) in zip(nodes, ranges, strict=True):
            with node.client() as conn:
                conn.execute_command("CLUSTER ADDSLOTSRANGE", first, last)
        with nodes[0].client() as conn:
            for node, bus in zip(nodes[1:], bus_ports[1:], strict=True):
                conn.execute_command("CLUSTER MEET", HOST, node.port, bus)
        _wait_ready(nodes)
        with nodes[0].client() as conn:
            version = server_version(conn)
        yield Cluster(nodes, tuple(ranges), version, auth=auth)


def _bus_port(node: ServerProcess) -> int:
    with node.client() as conn:
        return int(conn.config_get("cluster-port")["cluster-port"])


def _cluster_info(node: ServerProcess) -> dict[str, str]:
    with node.client() as conn:
        info = conn.execute_command("CLUSTER INFO")  # parsed into a dict by redis-py
    return {str(key): str(value) for key, value in info.items()}


def _wait_ready(nodes: Sequence[ServerProcess]) -> None:
    def ready(node: ServerProcess) -> bool:
        try:
            info = _cluster_info(node)
        except redis.RedisError:
            return False
        return (
            info.get("cluster_state") == "ok"
            and info.get("cluster_known_nodes") == str(len(nodes))
            and info.get("cluster_slots_assigned") == str(SLOTS)
        )

    def failure(timeout: float) -> Exception:
        states = []
        for node in nodes:
            try:
                info = _cluster_info(node)
                state = ", ".join(
                    f"{key}={info.get(key)}"
                    for key in ("cluster_state", "cluster_known_nodes", "cluster_slots_assigned")
                )
            except redis.RedisError as exc:
                state = f"unreachable: {exc}"
            states.append(f"{node!r}: {state}\n--- log tail ---\n{node.log_tail()}")
        return ServerStartError(f"cluster not ready within {timeout} s:\n" + "\n".join(states))

    wait_until(lambda: all(ready(node) for node in nodes), READY_TIMEOUT, failure)
