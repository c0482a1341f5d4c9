"""No lost updates (DESIGN §4) with threads."""

from __future__ import annotations

import dataclasses
import threading

import torpor


def test_update_8_threads_x_1000_loses_nothing(mgr: torpor.Manager) -> None:
    s = mgr.create({"n": 0})
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(1000):
            mgr.update(s.id, lambda d: {"n": d["n"] + 1})

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = mgr.peek(s.id)
    assert final is not None and final.data == {"n": 8000} and final.version == 8001


def test_concurrent_create_of_one_id_has_one_winner(mgr: torpor.Manager) -> None:
    winners: list[int] = []
    losers: list[int] = []
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            mgr.create({"by": i}, session_id="contested")
            winners.append(i)
        except torpor.SessionExists:
            losers.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(losers) == 7
    assert mgr.peek("contested").data == {"by": winners[0]}  # type: ignore[union-attr]


def test_save_races_have_one_winner(mgr: torpor.Manager) -> None:
    s = mgr.create({"n": 0})
    results: list[str] = []
    barrier = threading.Barrier(6)

    def worker(i: int) -> None:
        copy = mgr.peek(s.id)
        assert copy is not None
        barrier.wait()
        try:
            mgr.save(dataclasses.replace(copy, data={"n": i}))
            results.append("ok")
        except torpor.Conflict:
            results.append("conflict")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 1 and results.count("conflict") == 5
    assert mgr.peek(s.id).version == 2  # type: ignore[union-attr]
