"""The hook seam: fast path, wrappers, and the checks on a backend's claims."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

import torpor
from tests.minimal_backend import MinimalBackend
from torpor import Capability, ConfigError
from torpor.plugins.ets_like import EtsLikeBackend


def test_fast_path_binds_the_backend_method() -> None:
    backend = MinimalBackend()
    with torpor.open(backend, sweeper=False) as mgr:
        assert mgr._b.fetch == backend.torpor_fetch  # the bound method itself, no pluggy
        assert mgr._b.store == backend.torpor_store


class CountingWrapper:
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    @torpor.hookimpl(wrapper=True)
    def torpor_fetch(self, session_id: str) -> Generator[None, Any, Any]:
        self.calls["fetch"] = self.calls.get("fetch", 0) + 1
        return (yield)

    @torpor.hookimpl(wrapper=True)
    def torpor_store(self, record: torpor.Record) -> Generator[None, Any, Any]:
        self.calls["store"] = self.calls.get("store", 0) + 1
        return (yield)


@pytest.mark.parametrize("backend_name", ["ets_like", "minimal"])
def test_wrappers_see_every_data_call(backend_name: str) -> None:
    wrapper = CountingWrapper()
    backend: object = MinimalBackend() if backend_name == "minimal" else backend_name
    with torpor.open(backend, plugins=[wrapper], sweeper=False) as mgr:
        assert mgr._b.fetch is not getattr(backend, "torpor_fetch", None)  # dispatched
        s = mgr.create({"n": 1})
        assert mgr.peek(s.id).data == {"n": 1}  # type: ignore[union-attr]
        mgr.update(s.id, lambda d: {"n": 2})
        assert mgr.get(s.id).data == {"n": 2}  # type: ignore[union-attr]
    assert wrapper.calls["fetch"] >= 4 and wrapper.calls["store"] >= 3


def test_a_wrapper_can_transform_results() -> None:
    class HideSecret:
        @torpor.hookimpl(wrapper=True)
        def torpor_fetch(self, session_id: str) -> Generator[None, Any, Any]:
            value = yield
            return None if session_id == "secret" else value

    with torpor.open(plugins=[HideSecret()], sweeper=False) as mgr:
        mgr.create({}, session_id="secret")
        mgr.create({}, session_id="open")
        assert mgr.peek("secret") is None and mgr.peek("open") is not None


def test_fast_path_off_dispatches_with_identical_results() -> None:
    with torpor.open(fast_path=False, sweeper=False) as mgr:
        assert mgr._b.fetch != mgr._b._backend.torpor_fetch  # type: ignore[attr-defined]
        s = mgr.create({"x": [1, 2]})
        assert mgr.get(s.id).data == {"x": [1, 2]}  # type: ignore[union-attr]


class ClaimsTooMuch(MinimalBackend):
    def torpor_capabilities(self) -> list[Capability]:
        return [Capability.NATIVE_ITERATION]


class HidesAHook(MinimalBackend):
    def torpor_idle_ids(self, cutoff_ms: int, limit: int) -> list[str]:
        return []


class LacksAHook:
    def torpor_fetch(self, session_id: str) -> None:
        return None


class HasATypo(MinimalBackend):
    def torpor_fecth(self, session_id: str) -> None:
        return None


class BadCapability(MinimalBackend):
    def torpor_capabilities(self) -> list[str]:
        return ["teleportation"]


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        (ClaimsTooMuch(), "claims NATIVE_ITERATION but does not implement torpor_iterate"),
        (HidesAHook(), "implements torpor_idle_ids but does not claim NATIVE_HIBERNATION"),
        (LacksAHook(), "lacks the required hook"),
        (HasATypo(), "torpor_fecth"),
        (BadCapability(), "unknown capability 'teleportation'"),
    ],
)
def test_backend_claims_are_checked(backend: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        torpor.open(backend, sweeper=False)


def test_backend_options_go_to_a_backend_object_only_by_name() -> None:
    with pytest.raises(ConfigError, match="backend options"):
        torpor.open(MinimalBackend(), path="/tmp/x")


def test_unknown_backend_option_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="valid: index_bucket_ms"):
        torpor.open("ets_like", path="/tmp/x")


def test_a_wrapper_around_a_hook_the_backend_lacks_keeps_the_fallback() -> None:
    # ets_like has no torpor_transact: a wrapper for it must not replace the core's
    # locked fallback with an empty call.
    class WrapsTransact:
        @torpor.hookimpl(wrapper=True)
        def torpor_transact(self, session_id: str, fn: Any) -> Generator[None, Any, Any]:
            return (yield)

    with torpor.open("ets_like", plugins=[WrapsTransact()], sweeper=False) as mgr:
        assert not mgr.native("transact")
        s = mgr.create({"n": 1})
        assert mgr.update(s.id, lambda d: {"n": 2}).data == {"n": 2}
        assert mgr.peek(s.id).data == {"n": 2}  # type: ignore[union-attr]


class _ParametersInAnotherOrder(EtsLikeBackend):
    """Declares the hookspecs' parameters in another order (or only some of them):
    pluggy passes them by name, and so must the direct-call fast path."""

    def torpor_expired_ids(self, limit: int, now_ms: int) -> Any:
        return super().torpor_expired_ids(now_ms, limit)

    def torpor_idle_ids(self, limit: int, cutoff_ms: int) -> Any:
        return super().torpor_idle_ids(cutoff_ms, limit)


@pytest.mark.parametrize("fast_path", [True, False])
def test_hook_parameters_are_matched_by_name_not_position(fast_path: bool) -> None:
    clock = torpor.ManualClock()
    backend = _ParametersInAnotherOrder()
    with torpor.open(backend, clock=clock, sweeper=False, fast_path=fast_path) as mgr:
        for _ in range(3):
            mgr.create({}, timeout_ms=10_000)
        clock.advance(5_000)
        assert mgr.hibernate_idle(1_000) == 3  # swapped: cutoff 1000 ms, nothing idle
        clock.advance(10_000)
        assert mgr.cleanup_expired() == 3  # swapped: "now" would be the batch size
