"""Lazy iteration (DESIGN §6)."""

from __future__ import annotations

import threading

import pytest

from torpor.conformance._kit import Kit
from torpor.conformance._marks import kit_module
from torpor.conformance.helpers import walk_peak_bytes


def test_every_session_once(kit: Kit) -> None:
    mgr = kit.open()
    ids = {mgr.create({"i": i}).id for i in range(1500)}
    for batch in (1, 7, 100, 5000):
        seen = list(mgr.ids(batch_size=batch))
        assert len(seen) == len(set(seen)) and set(seen) == ids, batch
    assert {s.id for s in mgr.sessions(batch_size=64)} == ids


def test_exactly_once_while_another_thread_writes(kit: Kit) -> None:
    mgr = kit.open()
    stable = [mgr.create({"stable": i}).id for i in range(2000)]
    churn = [mgr.create({"churn": i}).id for i in range(500)]
    stop = threading.Event()
    failures: list[BaseException] = []

    def writer() -> None:
        i = 0
        try:
            while not stop.is_set():
                slot = i % len(churn)
                mgr.delete(churn[slot])
                churn[slot] = mgr.create({"churn": i}).id
                victim = stable[(i * 7) % len(stable)]
                mgr.update(victim, lambda d: {**d, "n": d.get("n", 0) + 1})
                mgr.touch(stable[(i * 13) % len(stable)])
                i += 1
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = list(mgr.ids(batch_size=50))
        seen_sessions = [s.id for s in mgr.sessions(batch_size=50)]
    finally:
        stop.set()
        thread.join()
    assert not failures, failures
    for walk in (seen, seen_sessions):
        assert len(walk) == len(set(walk)), "an id was yielded twice"
        assert set(stable) <= set(walk), "a session that existed throughout was skipped"


def test_iteration_is_lazy(kit: Kit) -> None:
    mgr = kit.open()
    for i in range(300):
        mgr.create({"i": i})
    walk = mgr.ids(batch_size=10)
    first = next(walk)
    assert mgr.delete(first)
    rest = list(walk)
    assert first not in rest and len(rest) == 299


@pytest.mark.torpor_requires("native_iteration")
def test_native_iteration_memory_stays_flat(kit: Kit) -> None:
    mgr = kit.open()
    pad = {"pad": "x" * 50}
    small = walk_peak_bytes(mgr, 2_000, 200, pad)
    large = walk_peak_bytes(mgr, 20_000, 200, pad)
    assert large < small * 1.5 + 32_768, f"peak {small} B at 2,000 vs {large} B at 20,000"


def test_an_id_deleted_and_created_again_mid_walk_comes_once_at_most(kit: Kit) -> None:
    mgr = kit.open()
    ids = [mgr.create({"i": i}, session_id=f"w{i:03}").id for i in range(30)]
    seen: list[str] = []
    for sid in mgr.ids(batch_size=4):
        seen.append(sid)
        if len(seen) in (2, 9, 17):  # re-create ids already met (and one not yet met)
            for again in (seen[0], seen[-1], ids[-1]):
                mgr.delete(again)
                mgr.create({"again": True}, session_id=again)
    assert len(seen) == len(set(seen)), [s for s in seen if seen.count(s) > 1]
    assert set(ids) - {ids[-1], *seen} == set()  # the rest were met exactly once


kit_module(globals(), "iteration")
