"""A temp folder and the servers started in it, torn down together."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.servers.process import STOP_TIMEOUT, ServerProcess, launch

ConfigFn = Callable[[Sequence[int], Path], list[str]]


class Workspace:
    """Servers of one topology, each in a subfolder named after its role and port.  On
    exit every server is stopped by PID (newest first) and the folder removed, even when
    start-up failed halfway."""

    def __init__(self, binary: Path, *, stop_timeout: float = STOP_TIMEOUT) -> None:
        self.binary = binary
        self.stop_timeout = stop_timeout
        self.folder = Path(tempfile.mkdtemp(prefix="torpor-redis-"))
        self.servers: list[ServerProcess] = []

    def start(
        self,
        role: str,
        config: ConfigFn,
        *,
        port_count: int = 1,
        sentinel: bool = False,
        client_options: Mapping[str, Any] | None = None,
    ) -> ServerProcess:
        """A server on fresh ports; ``config(ports, folder)`` gives its config lines,
        ``client_options`` what a client of it needs (see ServerProcess)."""

        def build(ports: Sequence[int]) -> ServerProcess:
            folder = self.folder / f"{role}-{ports[0]}"
            return ServerProcess(
                self.binary,
                folder,
                ports[0],
                config(ports, folder),
                sentinel=sentinel,
                stop_timeout=self.stop_timeout,
                client_options=client_options,
            )

        server = launch(build, port_count)
        self.servers.append(server)
        return server

    def close(self) -> None:
        # An ExitStack runs every callback (newest first) even when one of them raises.
        with ExitStack() as stack:
            stack.callback(shutil.rmtree, self.folder, ignore_errors=True)
            for server in self.servers:
                stack.callback(server.stop)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
