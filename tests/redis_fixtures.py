"""Fixtures shared by the redis backend's tests (registered in tests/conftest.py):
a fresh namespace, a plain client to look at the keyspace, and managers over the
shared standalone server."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

import torpor
from tests.servers import Standalone
from torpor.plugins.redis import RedisBackend, create_backend

OpenFn = Callable[..., torpor.Manager]


@pytest.fixture
def namespace() -> str:
    """A namespace of this test's own: tests share one server."""
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
def raw(redis_standalone: Standalone) -> Iterator[redis.Redis]:
    """A plain client, as a foreign program (or an operator) sharing the server has."""
    with redis.Redis.from_url(redis_standalone.url) as client:
        yield client


@pytest.fixture
def open_redis(
    redis_standalone: Standalone, namespace: str, clock: torpor.ManualClock
) -> Iterator[OpenFn]:
    """``open_redis(backend=None, clock=None, **options)``: a manager without a sweeper,
    each call over a backend of its own (its own connection pool, as another process
    would have) on the test's namespace unless one is given; closed after the test."""
    opened: list[torpor.Manager] = []
    shared_clock = clock

    def make(
        backend: RedisBackend | None = None,
        clock: torpor.ManualClock | None = None,
        **options: Any,
    ) -> torpor.Manager:
        if backend is None:
            backend = create_backend(url=redis_standalone.url, namespace=namespace)
        mgr = torpor.open(backend, clock=clock or shared_clock, sweeper=False, **options)
        opened.append(mgr)
        return mgr

    yield make
    for mgr in opened:
        mgr.close()
