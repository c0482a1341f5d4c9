"""One Redis/Valkey server process: its folder, config and log; started, checked ready
and stopped by PID."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.servers.ports import HOST, free_ports
from tests.servers.tls import UNSUPPORTED_MARKERS
from tests.servers.waiting import wait_until

START_TIMEOUT = 10.0  # seconds for a server to answer PING
STOP_TIMEOUT = 3.0  # seconds between SIGTERM and SIGKILL
LOG_TAIL_LINES = 30


class ServerStartError(RuntimeError):
    """A server did not become ready; the message ends with its log's tail."""


class PortInUse(ServerStartError):
    """Lost the race for a free port: another process bound it first."""


class TlsUnsupported(ServerStartError):
    """The server binary was built without TLS and refused the TLS settings."""


def connect(port: int, **options: Any) -> redis.Redis:
    """A client for the harness's own checks.  No automatic retries: a poll must see each
    failure at once rather than wait through redis-py's backoff."""
    options = {
        "decode_responses": True,
        "socket_connect_timeout": 1,
        "socket_timeout": 5,
        "retry": Retry(NoBackoff(), 0),
        **options,
    }
    return redis.Redis(host=HOST, port=port, **options)


def base_config(port: int, folder: Path) -> list[str]:
    """What every server of the harness runs with: loopback, foreground, nothing on disk."""
    return [
        f"bind {HOST}",
        # Bound to loopback only (above), so there is no outside client to protect from.
        "protected-mode no",
        f"port {port}",
        "daemonize no",
        f'dir "{folder}"',
        'save ""',
        "appendonly no",
        # The default waits 5 s for more replicas before a diskless full sync.
        "repl-diskless-sync-delay 0",
    ]


class ServerProcess:
    """A server in its own folder (config file, log, anything it writes).  The config is
    written once, so a restart keeps what the server rewrote itself (Sentinel's state).
    ``client_options`` are what any client of it needs (credentials, TLS): the harness's
    own clients, the readiness check included, use them."""

    def __init__(
        self,
        binary: Path,
        folder: Path,
        port: int,
        config: Sequence[str],
        *,
        sentinel: bool = False,
        stop_timeout: float = STOP_TIMEOUT,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.binary = binary
        self.folder = folder
        self.port = port
        self.sentinel = sentinel
        self.stop_timeout = stop_timeout
        self.client_options = dict(client_options or {})
        self.config_path = folder / ("sentinel.conf" if sentinel else "server.conf")
        self.log_path = folder / "server.log"
        self._popen: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None  # the last started process's, kept after it ends
        folder.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("\n".join(config) + "\n", encoding="utf-8")

    def __repr__(self) -> str:
        role = "sentinel" if self.sentinel else "server"
        return f"<{role} {HOST}:{self.port} pid={self.pid}>"

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def client(self, **options: Any) -> redis.Redis:
        return connect(self.port, **{**self.client_options, **options})

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start and wait until this very process answers (PING, then its PID in INFO:
        a server another process left on the port must not pass for ours)."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        argv = [str(self.binary), str(self.config_path)]
        if self.sentinel:
            argv.append("--sentinel")
        # Early errors (a bad config line) reach stderr only, so both streams go to the log.
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
            )
        self.pid = self._popen.pid
        try:
            # A short reply timeout: a process that took the port first may accept the
            # connection and never answer, while ours answers PING at once once up.
            with self.client(socket_timeout=0.5) as conn:
                wait_until(lambda: self._answers(conn), timeout, self._not_ready)
        except BaseException:
            self.stop()
            raise

    def _answers(self, conn: redis.Redis) -> bool:
        code = self.returncode
        if code is not None:
            tail = self.log_tail()
            kind = ServerStartError
            if "Address already in use" in tail:
                kind = PortInUse
            elif any(marker in tail for marker in UNSUPPORTED_MARKERS):
                kind = TlsUnsupported
            raise kind(f"{self!r} exited with code {code} before answering" + self._tail_note())
        try:
            return bool(conn.ping()) and conn.info("server").get("process_id") == self.pid
        except (redis.ConnectionError, redis.TimeoutError):
            return False

    def _not_ready(self, timeout: float) -> Exception:
        return ServerStartError(f"{self!r} did not answer within {timeout} s" + self._tail_note())

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not ended within ``stop_timeout``; reaps it."""
        if self._popen is None:
            return
        if self._popen.poll() is None:
            self._popen.terminate()
            try:
                self._popen.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._popen.kill()
        self._popen.wait()

    def kill(self) -> None:
        """SIGKILL at once (a crash: no shutdown, no goodbye to replicas), and reap it."""
        if self._popen is not None and self._popen.poll() is None:
            self._popen.kill()
            self._popen.wait()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _tail_note(self) -> str:
        return f"\n--- last lines of {self.log_path} ---\n{self.log_tail()}"


Builder = Callable[[Sequence[int]], ServerProcess]


def launch(
    build: Builder,
    port_count: int = 1,
    *,
    attempts: int = 5,
    pick: Callable[[int], list[int]] = free_ports,
) -> ServerProcess:
    """Start ``build(ports)`` on freshly picked ports, picking again when another process
    took a port between the pick and the server's bind."""
    lost: PortInUse | None = None
    for _ in range(attempts):
        server = build(pick(port_count))
        try:
            server.start()
        except PortInUse as exc:
            lost = exc
            continue
        return server
    raise ServerStartError(f"every port picked in {attempts} attempts was taken") from lost
