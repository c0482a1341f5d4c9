"""Lazy iteration (DESIGN §6): what the conformance kit does not check.  Walks that
yield every session once, lazily, in flat memory, even under concurrent writers, are
kit tests; tests/test_kit_catches.py runs the kit on ets_like, the fallback-only
backend and lmdb."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

import torpor
from tests.conftest import OpenFn
from tests.minimal_backend import MinimalBackend
from torpor import Record


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


# -- torpor_iterate_ids: ids() without whole records ---------------------------------------
class _IdsWalker(MinimalBackend):
    """A native walk by position in the sorted keys, and its ids-only twin, which skips
    damaged and expired records itself and returns foreign keys as they are (the
    manager drops those).  Counts the calls of each."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = {"torpor_iterate": 0, "torpor_iterate_ids": 0}

    def torpor_capabilities(self) -> set[torpor.Capability]:
        return {torpor.Capability.NATIVE_ITERATION}

    def _page(self, cursor: int | None, batch_size: int) -> tuple[list[Any], int | None]:
        keys = sorted(self.blobs, key=repr)
        start = cursor or 0
        items = [(k, self.blobs[k]) for k in keys[start : start + batch_size]]
        end = start + len(items)
        return items, (end if end < len(keys) else None)

    def torpor_iterate(self, cursor: int | None, batch_size: int) -> tuple[list[Any], Any]:
        self.calls["torpor_iterate"] += 1
        return self._page(cursor, batch_size)

    def torpor_iterate_ids(
        self, cursor: int | None, batch_size: int, now_ms: int
    ) -> tuple[list[str | bytes], Any]:
        self.calls["torpor_iterate_ids"] += 1
        items, after = self._page(cursor, batch_size)
        ids: list[str | bytes] = []
        for key, value in items:
            try:
                record = Record.of(value, key if isinstance(key, str) else None)
                record.session_data(1 << 20)
            except torpor.SerializationError:
                continue
            if not record.is_expired(now_ms):
                ids.append(key)
        return ids, after


class _Wraps:
    """An extension plugin wrapping the named walk hooks (and doing nothing else)."""

    def __init__(self, *hooks: str) -> None:
        def passthrough(**_: Any) -> Generator[None, Any, Any]:
            return (yield)

        for hook in hooks:
            setattr(self, hook, torpor.hookimpl(wrapper=True)(passthrough))


def _walker(backend: _IdsWalker, clock: torpor.ManualClock) -> torpor.Manager:
    mgr = torpor.open(backend, clock=clock, sweeper=False)
    mgr.create({}, session_id="live", timeout_ms=None)
    mgr.create({}, session_id="brief", timeout_ms=10)
    good = Record("ctl\x01id", 0, 0, None, 1, False, 7, b"\x80").blob
    backend.conformance_plant(b"ctl\x01id", good)  # intact, but its key is no valid id
    backend.conformance_plant(b"\xff", good)  # not UTF-8
    backend.conformance_plant(b"junk", b"not a record")
    clock.advance(11)  # "brief" has expired
    return mgr


def test_ids_use_the_ids_walk_and_drop_keys_that_are_no_ids(
    clock: torpor.ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    backend = _IdsWalker()
    with _walker(backend, clock) as mgr, caplog.at_level("WARNING", logger="torpor"):
        assert list(mgr.ids(batch_size=2)) == ["live"]
        assert backend.calls == {"torpor_iterate": 0, "torpor_iterate_ids": 3}
        assert "not a valid session id" in caplog.text
        assert [s.id for s in mgr.sessions(batch_size=2)] == ["live"]
        assert backend.calls["torpor_iterate"] == 3


@pytest.mark.parametrize(
    ("wrapped", "ids_walk"),
    [
        (("torpor_iterate",), False),  # the plugin must see the ids walk too
        (("torpor_iterate", "torpor_iterate_ids"), True),
        (("torpor_iterate_ids",), True),
    ],
)
def test_a_plugin_wrapping_only_the_record_walk_sees_ids_walks_too(
    clock: torpor.ManualClock, wrapped: tuple[str, ...], ids_walk: bool
) -> None:
    backend = _IdsWalker()
    mgr = torpor.open(backend, clock=clock, sweeper=False, plugins=[_Wraps(*wrapped)])
    with mgr:
        mgr.create({}, session_id="live", timeout_ms=None)
        assert list(mgr.ids()) == ["live"]
        assert (backend.calls["torpor_iterate_ids"] > 0) is ids_walk
        assert (backend.calls["torpor_iterate"] > 0) is not ids_walk


def test_an_ids_walk_without_the_record_walk_is_refused() -> None:
    class IdsOnly(MinimalBackend):
        def torpor_iterate_ids(
            self, cursor: Any, batch_size: int, now_ms: int
        ) -> tuple[list[str], None]:
            return [], None

    with pytest.raises(torpor.ConfigError, match="torpor_iterate_ids without torpor_iterate"):
        torpor.open(IdsOnly(), sweeper=False)
