"""One standalone server, optionally password-protected and/or TLS-only."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.servers.auth import Auth
from tests.servers.ports import HOST
from tests.servers.process import STOP_TIMEOUT, ServerProcess, base_config
from tests.servers.tls import TlsFiles, make_tls_files
from tests.servers.version import ServerVersion, server_version
from tests.servers.workspace import Workspace


@dataclass(frozen=True)
class Standalone:
    server: ServerProcess  # kill(), stop() and start() again (same port) for restart tests
    version: ServerVersion
    host: str = HOST
    auth: Auth | None = None
    tls: TlsFiles | None = None  # set: the server listens on TLS only

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        """``redis://`` (``rediss://`` with TLS), with the credentials if any: a client
        of a TLS server also needs :meth:`client_options`' CA."""
        scheme = "rediss" if self.tls is not None else "redis"
        userinfo = self.auth.userinfo() if self.auth is not None else ""
        return f"{scheme}://{userinfo}{self.host}:{self.port}/0"

    def client_options(self) -> dict[str, Any]:
        """What a redis-py client (or ``torpor.open``) needs besides :attr:`url`."""
        return {"ssl_ca_certs": str(self.tls.ca)} if self.tls is not None else {}

    @property
    def servers(self) -> tuple[ServerProcess, ...]:
        return (self.server,)

    @property
    def pids(self) -> list[int]:
        return [server.pid for server in self.servers if server.pid is not None]


@contextmanager
def standalone(
    binary: Path,
    *,
    config: Sequence[str] = (),
    auth: Auth | None = None,
    tls: bool = False,
    stop_timeout: float = STOP_TIMEOUT,
) -> Iterator[Standalone]:
    """A server on a free loopback port; ``config`` lines are appended to the harness's
    (a later directive wins: ``maxmemory-policy``, ``appendonly``...).  ``auth``
    protects it; ``tls`` makes it listen on TLS only, with a fresh CA (raises
    ``TlsUnsupported`` if the binary has no TLS, ``TlsUnavailable`` without openssl)."""
    with Workspace(binary, stop_timeout=stop_timeout) as space:
        files = make_tls_files(space.folder / "tls") if tls else None
        options: dict[str, Any] = {}
        if auth is not None:
            options.update(auth.client_options())
        if files is not None:
            options.update(files.client_options())

        def lines(ports: Sequence[int], folder: Path) -> list[str]:
            extra = [*(auth.server_config() if auth else []), *config]
            if files is not None:
                extra = [*files.server_config(ports[0]), *extra]
            return [*base_config(ports[0], folder), *extra]

        server = space.start("standalone", lines, client_options=options)
        with server.client() as conn:
            version = server_version(conn)
        yield Standalone(server, version, auth=auth, tls=files)
