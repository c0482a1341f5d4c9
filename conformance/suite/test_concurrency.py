"""No lost updates from threads (DESIGN §4)."""

from __future__ import annotations

import dataclasses
import threading

import torpor
from torpor.conformance._kit import Kit
from torpor.conformance._marks import kit_module


def _run(threads: int, work: object) -> None:
    start = threading.Barrier(threads)

    def body(k: int) -> None:
        start.wait()
        work(k)  # type: ignore[operator]

    pool = [threading.Thread(target=body, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def test_no_lost_updates_from_8_threads(kit: Kit) -> None:
    mgr = kit.open()
    ids = [mgr.create({"n": 0}).id for _ in range(3)]

    def work(k: int) -> None:
        for i in range(500):
            mgr.update(ids[(k + i) % 3], lambda d: {"n": d["n"] + 1})

    _run(8, work)
    assert sum(mgr.peek(i).data["n"] for i in ids) == 4000  # type: ignore[union-attr]


def test_one_winner_per_contested_create(kit: Kit) -> None:
    mgr = kit.open()
    outcome: list[str] = []

    def work(k: int) -> None:
        try:
            mgr.create({"by": k}, session_id="contested")
            outcome.append("won")
        except torpor.SessionExists:
            outcome.append("lost")

    _run(8, work)
    assert sorted(outcome) == ["lost"] * 7 + ["won"]


def test_one_winner_per_contested_save(kit: Kit) -> None:
    mgr = kit.open()
    s = mgr.create({"n": 0})
    outcome: list[str] = []

    def work(k: int) -> None:
        try:
            mgr.save(dataclasses.replace(s, data={"n": k}))
            outcome.append("saved")
        except torpor.Conflict:
            outcome.append("conflict")

    _run(6, work)
    assert sorted(outcome) == ["conflict"] * 5 + ["saved"]
    assert mgr.peek(s.id).version == 2  # type: ignore[union-attr]


kit_module(globals(), "concurrency")
