"""Real Redis/Valkey servers for torpor's tests: standalone, Cluster and Sentinel, each
started on free loopback ports in a temp folder and stopped by PID.  The pytest fixtures
are in tests.servers.plugin; docs/testing.md explains the binary order and env vars."""

from tests.servers.auth import Auth
from tests.servers.binary import ServerBinary, ServerBinaryNotFound, find_server_binary
from tests.servers.cluster import Cluster, cluster
from tests.servers.process import PortInUse, ServerProcess, ServerStartError, TlsUnsupported
from tests.servers.sentinel import SentinelSetup, sentinel
from tests.servers.standalone import Standalone, standalone
from tests.servers.tls import TlsFiles, TlsUnavailable
from tests.servers.version import ServerVersion

__all__ = [
    "Auth",
    "Cluster",
    "PortInUse",
    "SentinelSetup",
    "ServerBinary",
    "ServerBinaryNotFound",
    "ServerProcess",
    "ServerStartError",
    "ServerVersion",
    "Standalone",
    "TlsFiles",
    "TlsUnavailable",
    "TlsUnsupported",
    "cluster",
    "find_server_binary",
    "sentinel",
    "standalone",
]
