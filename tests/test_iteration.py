"""Lazy iteration (DESIGN §6): what the conformance kit does not check.  Walks that
yield every session once, lazily, in flat memory, even under concurrent writers, are
kit tests; tests/test_kit_catches.py runs the kit on ets_like, the fallback-only
backend and lmdb."""

from __future__ import annotations

import pytest

import torpor
from tests.conftest import OpenFn


def test_fallback_reports_itself(open_mgr: OpenFn, backend_name: str) -> None:
    mgr = open_mgr()
    expected = "native" if backend_name == "ets_like" else "fallback"
    stats = mgr.stats()
    assert stats.iteration == expected and stats.capabilities == mgr.capabilities
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
