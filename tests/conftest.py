from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

import torpor
from tests.minimal_backend import MinimalBackend

# Real Redis/Valkey servers (docs/testing.md), and the redis backend's fixtures.
pytest_plugins = ["tests.servers.plugin", "tests.redis_fixtures"]

OpenFn = Callable[..., torpor.Manager]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Tests marked ``unmeasured`` run with coverage paused (pytest-cov's own
    ``no_cover`` mark fails the test when a run has ``--no-cov``)."""
    plugin = item.config.pluginmanager.get_plugin("_cov")  # pytest-cov's, if measuring
    controller = getattr(plugin, "cov_controller", None)
    if controller is None or item.get_closest_marker("unmeasured") is None:
        return (yield)
    controller.pause()
    try:
        return (yield)
    finally:
        controller.resume()


@pytest.fixture
def clock() -> torpor.ManualClock:
    return torpor.ManualClock()


@pytest.fixture(params=["ets_like", "minimal"])
def backend_name(request: pytest.FixtureRequest) -> str:
    """The first-party default and a required-hooks-only backend (all fallbacks)."""
    return str(request.param)


@pytest.fixture
def open_mgr(backend_name: str, clock: torpor.ManualClock) -> Iterator[OpenFn]:
    """Open managers on the parametrized backend with the manual clock and no sweeper;
    closes them all at the end."""
    opened: list[torpor.Manager] = []

    def _open(**options: Any) -> torpor.Manager:
        options.setdefault("sweeper", False)
        backend: object = MinimalBackend() if backend_name == "minimal" else backend_name
        mgr = torpor.open(backend, clock=clock, **options)
        opened.append(mgr)
        return mgr

    yield _open
    for mgr in opened:
        mgr.close()


@pytest.fixture
def mgr(open_mgr: OpenFn) -> torpor.Manager:
    return open_mgr()


@pytest.fixture
def ets(clock: torpor.ManualClock) -> Iterator[torpor.Manager]:
    """An ets_like manager, for what only the in-process backend reports."""
    with torpor.open("ets_like", clock=clock, sweeper=False) as mgr:
        yield mgr
