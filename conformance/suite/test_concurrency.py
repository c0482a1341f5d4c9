"""Atomic writes: no lost updates from threads, one winner per contested write, and
sweeps whose batches are all or nothing (DESIGN §4, §7; ``torpor_transact`` and
``torpor_transact_batch`` in ``torpor.hookspecs``)."""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter

import torpor
from torpor import EventKind, LifecycleEvent
from torpor.conformance._kit import STEP_MS, Kit
from torpor.conformance._marks import kit_module
from torpor.conformance.helpers import busy_switching, expect_returns, switching_at_every_call


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


def test_one_winner_per_contested_create_under_heavy_switching(kit: Kit) -> None:
    mgr = kit.open()
    rounds, threads = 20, 8
    outcome: list[tuple[int, str]] = []  # list.append is atomic; a Counter's += is not
    start = threading.Barrier(threads)

    def work(k: int) -> None:
        with switching_at_every_call():
            for round_ in range(rounds):
                start.wait()
                try:
                    mgr.create({"by": k}, session_id=f"contested-{round_}")
                    outcome.append((round_, "won"))
                except torpor.SessionExists:
                    outcome.append((round_, "lost"))

    with busy_switching():
        _run(threads, work)
    assert len(outcome) == rounds * threads
    won = Counter(round_ for round_, result in outcome if result == "won")
    wrong = {f"contested-{r}": won[r] for r in range(rounds) if won[r] != 1}
    assert not wrong, f"ids created by more (or fewer) than one of {threads} threads: {wrong}"


class _Events:
    """An observer plugin: how many sessions the manager reports each kind of event
    for (a sweep reports one event per committed batch)."""

    def __init__(self) -> None:
        self.counts: Counter[EventKind] = Counter()

    def torpor_event(self, event: LifecycleEvent) -> None:
        self.counts[event.kind] += event.count


class _StopAt:
    """A ``run_maintenance`` stop flag that turns True at its ``n``-th look: a sweep
    looks before each batch and each session, so this interrupts it at a chosen
    point, inside a batch or between two."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.looks = 0

    def __call__(self) -> bool:
        self.looks += 1
        return self.looks >= self.n


def test_an_interrupted_sweep_applies_whole_batches_or_reports_them(kit: Kit) -> None:
    # A batch the stop flag interrupts is rolled back whole by torpor_transact_batch
    # (or, without that hook, each session was its own transaction); either way what
    # the manager reports to observers is exactly what the store holds.
    events = _Events()
    mgr = kit.open(sweep_batch_size=5, hibernate_after_ms=10 * STEP_MS, plugins=[events])
    idle = [mgr.create({"i": i}, timeout_ms=None).id for i in range(23)]
    kit.clock.advance(11 * STEP_MS)
    for n in (3, 4, 6, 9, 10, 13, 17, 22):
        mgr.run_maintenance(_StopAt(n))
        expect_returns(
            events.counts[EventKind.HIBERNATED],
            lambda: mgr.stats().hibernated,
            what=f"stats().hibernated after a hibernation pass stopped at look {n}",
        )
    mgr.run_maintenance()
    assert events.counts[EventKind.HIBERNATED] == mgr.stats().hibernated == len(idle)

    doomed = [mgr.create({"i": i}, timeout_ms=STEP_MS).id for i in range(23)]
    kit.clock.advance(2 * STEP_MS)  # expired, not yet idle for hibernate_after_ms
    for n in (3, 4, 6, 9, 10, 13, 17, 22):
        mgr.run_maintenance(_StopAt(n))
        expect_returns(
            len(doomed) - events.counts[EventKind.EXPIRED],
            lambda: mgr.stats().expired_pending,
            what=f"stats().expired_pending after an expiry pass stopped at look {n}",
        )
    mgr.run_maintenance()
    assert events.counts[EventKind.EXPIRED] == len(doomed) and len(mgr) == len(idle)


kit_module(globals(), "concurrency")
