"""Lazy iteration (DESIGN §6)."""

# Exactly-once iteration under concurrent writers is a conformance-kit
# test; tests/test_kit_catches.py runs the whole kit against ets_like and the
# fallback-only backend.

from __future__ import annotations

import tracemalloc

import pytest

import torpor
from tests.conftest import OpenFn


def test_ids_and_sessions_yield_everything_once(mgr: torpor.Manager) -> None:
    ids = {mgr.create({"i": i}).id for i in range(2500)}
    seen = list(mgr.ids(batch_size=100))
    assert len(seen) == len(set(seen)) == 2500 and set(seen) == ids
    assert {s.id for s in mgr.sessions(batch_size=7)} == ids


def test_iteration_is_lazy(mgr: torpor.Manager) -> None:
    for i in range(50):
        mgr.create({"i": i})
    it = mgr.ids(batch_size=10)
    first = next(it)
    mgr.delete(first)
    rest = list(it)
    assert first not in rest and len(rest) == 49


def test_native_iteration_memory_follows_the_batch(ets: torpor.Manager) -> None:
    mgr = ets
    assert mgr.stats().iteration == "native"

    def peak_while_walking(n: int) -> int:
        while len(mgr) < n:
            mgr.create({"x": 1})
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            count = sum(1 for _ in mgr.ids(batch_size=500))
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        assert count == n
        return peak

    small = peak_while_walking(5_000)
    large = peak_while_walking(50_000)
    assert large < small * 1.5 + 16_384, (small, large)


def test_fallback_reports_itself(open_mgr: OpenFn, backend_name: str) -> None:
    mgr = open_mgr()
    expected = "native" if backend_name == "ets_like" else "fallback"
    assert mgr.stats().iteration == expected
    assert mgr.native("iteration") is (expected == "native")


def test_list_utf8_ids_skips_foreign_keys(caplog: pytest.LogCaptureFixture) -> None:
    from tests.minimal_backend import MinimalBackend

    backend = MinimalBackend()
    with torpor.open(backend, sweeper=False) as mgr:
        good = mgr.create({}, session_id="日本").id
        backend.blobs["bad\x00key"] = b"junk"
        backend.blobs[b"\xff\xfe".decode("latin-1") + "\ud800"] = b"junk"  # lone surrogate
        with caplog.at_level("WARNING", logger="torpor"):
            assert mgr.list_utf8_ids() == [good]
        assert "skipped 2 key(s)" in caplog.text
        assert list(mgr.ids()) == [good]
