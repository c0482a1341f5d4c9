"""Lifecycle (DESIGN §11): close waits for calls in flight, is idempotent and
thread-safe; a failed open releases what it built; a dropped manager warns."""

from __future__ import annotations

import gc
import threading
import warnings

import pytest

import torpor
from tests.minimal_backend import MinimalBackend
from torpor import Capability
from torpor.errors import ConfigError, ManagerClosed


class Closing(MinimalBackend):
    """Counts torpor_close calls."""

    def __init__(self, claims: tuple[Capability, ...] = ()) -> None:
        super().__init__()
        self.closes = 0
        self._claims = claims

    def torpor_capabilities(self) -> tuple[Capability, ...]:
        return self._claims

    def torpor_close(self, urgent: bool) -> None:
        self.closes += 1


@pytest.mark.parametrize("backend_name", ["ets_like", "minimal"])
def test_close_waits_for_updates_in_flight(backend_name: str) -> None:
    backend: object = MinimalBackend() if backend_name == "minimal" else backend_name
    mgr = torpor.open(backend, sweeper=False)
    ids = [mgr.create({"n": 0}).id for _ in range(80)]
    go = threading.Event()
    results: list[object] = []

    def slow(d: dict[str, int]) -> dict[str, int]:
        go.wait(30)
        return {"n": d["n"] + 1}

    def work(sid: str) -> None:
        try:
            results.append(mgr.update(sid, slow).data)
        except Exception as exc:  # handed to the assertion below
            results.append(exc)

    threads = [threading.Thread(target=work, args=(sid,)) for sid in ids]
    for t in threads:
        t.start()
    while len(mgr._gate._inflight) < len(ids):  # every update has entered the manager
        threading.Event().wait(0.001)
    closer = threading.Thread(target=mgr.close)
    closer.start()
    while not mgr.closed:
        pass  # close has begun: new calls are refused from here on
    with pytest.raises(ManagerClosed):
        mgr.get(ids[0])
    go.set()
    for t in [*threads, closer]:
        t.join(30)
    assert results == [{"n": 1}] * 80  # none failed with SessionNotFound or anything else


def test_close_is_idempotent_and_thread_safe() -> None:
    backend = Closing()
    mgr = torpor.open(backend, sweeper=False)
    start = threading.Barrier(8)

    def close() -> None:
        start.wait()
        mgr.close(urgent=True)

    threads = [threading.Thread(target=close) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    mgr.close()
    assert backend.closes == 1 and mgr.closed


class _Typo:
    def torpor_fecth(self, session_id: str) -> None:  # a misspelt hook
        raise AssertionError("never called")


@pytest.mark.parametrize(
    ("claims", "plugins", "match"),
    [
        ((), [_Typo()], "does not fit"),
        ((Capability.TRANSACTIONS,), [], "TRANSACTIONS"),
        ((Capability.SHARED_MAILBOX,), [], "ATOMIC_UPDATE"),
    ],
)
def test_a_failed_open_closes_the_backend(
    claims: tuple[Capability, ...], plugins: list[object], match: str
) -> None:
    backend = Closing(claims)
    with pytest.raises(ConfigError, match=match):
        torpor.open(backend, plugins=plugins, sweeper=False)
    assert backend.closes == 1


def test_a_dropped_manager_warns_and_releases_its_backend() -> None:
    backend = Closing()
    mgr = torpor.open(backend, hibernate_after_ms=1000)  # with a sweeper thread
    sweeper = mgr.sweeper
    assert sweeper is not None
    with pytest.warns(ResourceWarning, match="not closed"):
        del mgr  # no reference cycle: collected at once, not at the next GC
    assert backend.closes == 1
    sweeper._thread.join(10)
    assert not sweeper._thread.is_alive()


def test_a_closed_manager_does_not_warn() -> None:
    with torpor.open(sweeper=False) as mgr:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        del mgr
        gc.collect()


def test_iteration_after_close_is_refused_at_the_next_batch() -> None:
    mgr = torpor.open(sweeper=False)
    for _ in range(5):
        mgr.create({})
    walk = mgr.ids(batch_size=2)
    next(walk)
    mgr.close()
    with pytest.raises(ManagerClosed):
        list(walk)


class Persisting(Closing):
    """Records writes that arrive after torpor_close (they would be lost)."""

    def __init__(self) -> None:
        super().__init__()
        self.after_close: list[str] = []

    def torpor_store(self, record: torpor.Record) -> None:
        if self.closes:
            self.after_close.append(record.id)
        super().torpor_store(record)


def test_an_urgent_close_never_acknowledges_a_write_it_stopped_waiting_for() -> None:
    backend = Persisting()
    mgr = torpor.open(backend, sweeper=False)
    mgr.create({"n": 0}, session_id="s")
    entered, go = threading.Event(), threading.Event()
    outcome: list[object] = []

    def slow(d: dict[str, int]) -> dict[str, int]:
        entered.set()
        go.wait(30)  # still running when the urgent close gives up waiting
        return {"n": 1}

    def work() -> None:
        try:
            outcome.append(mgr.update("s", slow))
        except Exception as exc:  # handed to the assertion
            outcome.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    assert entered.wait(30)
    mgr.close(urgent=True)
    assert backend.closes == 1
    go.set()
    worker.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], ManagerClosed), outcome
    assert backend.after_close == []  # not written, and not acknowledged either


def test_an_urgent_close_overtakes_an_orderly_one_and_returns_when_closed() -> None:
    backend = Persisting()
    mgr = torpor.open(backend, sweeper=False)
    mgr.create({}, session_id="s")
    entered, go = threading.Event(), threading.Event()

    def held(d: dict[str, object]) -> dict[str, object]:
        entered.set()
        go.wait(30)
        return d

    outcome: list[object] = []

    def work() -> None:
        try:
            outcome.append(mgr.update("s", held))
        except ManagerClosed as exc:
            outcome.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    assert entered.wait(30)
    orderly = threading.Thread(target=mgr.close)  # waits (up to 30 s) for the update
    orderly.start()
    while not mgr.closed:
        threading.Event().wait(0.001)
    mgr.close(urgent=True)  # must not return before the store is really closed
    assert backend.closes == 1
    orderly.join(30)
    go.set()
    worker.join(30)
    assert not orderly.is_alive() and not worker.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], ManagerClosed), outcome


def test_a_clock_must_return_whole_milliseconds() -> None:
    import time

    with pytest.raises(ConfigError, match="int"):
        torpor.open(clock=lambda: time.time() * 1000)
    with pytest.raises(ConfigError, match="callable"):
        torpor.open(clock=12345)  # type: ignore[arg-type]


def test_a_manual_clock_only_moves_forward() -> None:
    clock = torpor.ManualClock(1000)
    assert clock.advance(5) == 1005 == clock()
    clock.set(2000)
    clock.set(2000)  # standing still is allowed
    assert clock() == 2000 and repr(clock) == "ManualClock(2000)"
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="only moves forward"):
        clock.set(1999)
    assert clock() == 2000
