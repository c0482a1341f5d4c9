"""One standalone server."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.servers.ports import HOST
from tests.servers.process import STOP_TIMEOUT, ServerProcess, base_config
from tests.servers.version import ServerVersion, server_version
from tests.servers.workspace import Workspace


@dataclass(frozen=True)
class Standalone:
    server: ServerProcess  # kill(), stop() and start() again (same port) for restart tests
    version: ServerVersion
    host: str = HOST

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def servers(self) -> tuple[ServerProcess, ...]:
        return (self.server,)

    @property
    def pids(self) -> list[int]:
        return [server.pid for server in self.servers if server.pid is not None]


@contextmanager
def standalone(
    binary: Path, *, config: Sequence[str] = (), stop_timeout: float = STOP_TIMEOUT
) -> Iterator[Standalone]:
    """A server on a free loopback port; ``config`` lines are appended to the harness's
    (a later directive wins: ``requirepass``, ``maxmemory-policy``, TLS...)."""
    with Workspace(binary, stop_timeout=stop_timeout) as space:

        def lines(ports: Sequence[int], folder: Path) -> list[str]:
            return [*base_config(ports[0], folder), *config]

        server = space.start("standalone", lines)
        with server.client() as conn:
            version = server_version(conn)
        yield Standalone(server, version)
