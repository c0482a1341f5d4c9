"""Free loopback ports, as the kernel hands them out."""

from __future__ import annotations

import socket
from contextlib import ExitStack

HOST = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free right now.  All sockets stay bound until every port is
    picked, so the kernel cannot hand out one port twice; another process may still take
    one before the server binds it, which the caller detects and retries (see launch)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports
