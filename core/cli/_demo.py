"""``torpor demo``: the main job on the embedded default, end to end.

Measures what a chat-like session costs in memory (tracemalloc over a separate sample
store), then creates many sessions, lets time pass on a manual clock, hibernates the
idle ones, walks the store natively, and shows a priority message and a cancel
overtaking a backlog.  The big run is not traced: tracing every allocation made it
several times slower (issue 9).
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

import torpor
from torpor.cli._memory import HEAP_METHOD, SessionMemory, measure_sessions, resident_bytes
from torpor.cli._options import backend_options
from torpor.sample import chat_session, utf8_name

HIBERNATE_AFTER_MS = 30_000
TIMEOUT_MS = 24 * 3_600_000
IDLE_MS = 10 * 60_000  # how long the demo's clock moves on before hibernating


def _mib(n: float | None) -> str:
    return "unknown" if n is None else f"{n / 2**20:,.1f} MiB"


@click.command()
@click.option("--backend", default="ets_like", show_default=True, help="Backend to run on.")
@click.option("--sessions", "count", default=20_000, show_default=True, help="Sessions to create.")
@click.option("--active-share", default=0.1, show_default=True, help="Share of sessions kept busy.")
@click.option("--backlog", default=100_000, show_default=True, help="Normal messages queued.")
@click.option(
    "--memory-sample",
    default=2_000,
    show_default=True,
    help="Sessions in the separate store traced to measure memory per session.",
)
@click.option("--seed", default=7, show_default=True)
@backend_options
def demo(
    backend: str,
    count: int,
    active_share: float,
    backlog: int,
    memory_sample: int,
    seed: int,
    options: dict[str, str],
) -> None:
    """Measure memory per session, create sessions, hibernate the idle ones, iterate,
    and overtake a backlog."""
    if count < 1 or memory_sample < 2:
        raise click.UsageError("--sessions must be at least 1 and --memory-sample at least 2")
    console = Console()
    with _stores(backend, options) as (main_options, sample_options):
        console.print(f"[bold]torpor demo[/] on [cyan]{escape(backend)}[/]: {count:,} sessions")
        memory = _measure(console, backend, sample_options, memory_sample, seed)
        _run(console, backend, main_options, count, active_share, seed, memory, backlog)


@contextmanager
def _stores(
    backend: str, options: dict[str, str]
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Options for the big store and for the sample store.

    The sample needs a store of its own, so each storage location the backend declares
    (e.g. lmdb's ``path``) gets a temporary folder; the big store uses the user's when
    given, so that ``torpor demo --backend lmdb`` works without one.
    """
    try:
        declared = torpor.describe_factory(
            torpor.load_backend_factory(backend), name=backend
        ).storage_options
    except torpor.TorporError as exc:
        raise click.ClickException(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="torpor-demo-") as scratch:
        main = {k: str(Path(scratch, "main", name)) for k, name in declared.items()}
        sample = {k: str(Path(scratch, "sample", name)) for k, name in declared.items()}
        yield {**main, **options}, {**options, **sample}


def _open(backend: str, clock: torpor.ManualClock, options: dict[str, Any]) -> torpor.Manager:
    return torpor.open(
        backend,
        clock=clock,
        hibernate_after_ms=HIBERNATE_AFTER_MS,
        default_timeout_ms=TIMEOUT_MS,
        sweeper=False,  # the demo drives maintenance itself, on its manual clock
        **options,
    )


def _measure(
    console: Console, backend: str, options: dict[str, Any], count: int, seed: int
) -> SessionMemory:
    rng = random.Random(seed + 1)  # not the big run's sessions: a sample like them
    clock = torpor.ManualClock()
    status = console.status(f"measuring memory over {count:,} sample sessions (tracemalloc)")
    with status, _open(backend, clock, options) as mgr:
        # A persistent store keeps its sessions outside the Python heap, where
        # tracemalloc does not look: its own figure says what they take there.
        elsewhere = torpor.Capability.PERSISTENT in mgr.capabilities
        memory = measure_sessions(
            mgr, clock, lambda: chat_session(rng), count, idle_ms=IDLE_MS, storage=elsewhere
        )
    if memory.store.active <= 0 or memory.store.hibernated <= 0:
        raise click.ClickException(
            f"{count:,} sample sessions were too few to measure what one costs "
            f"(active {memory.store.active:,.0f} B, hibernated {memory.store.hibernated:,.0f} "
            "B): raise --memory-sample"
        )
    _print_memory(console, memory)
    return memory


def _print_memory(console: Console, memory: SessionMemory) -> None:
    store = memory.store
    console.print(
        f"memory per chat-like session, over a separate store of {memory.sessions:,} sample "
        "sessions:"
    )
    console.print(f"  live: {memory.live:,.0f} B (the session data as Python objects)")
    console.print(f"  in the store, active: {store.active:,.0f} B (record, id, indexes, data)")
    console.print(
        f"  in the store, hibernated: {store.hibernated:,.0f} B = "
        f"{memory.hibernated_share:.1%} of live ({1 / memory.hibernated_share:.1f}x smaller)"
    )
    first = f"  its first {memory.sessions // 2:,} sessions: {abs(store.once) / 1024:,.0f} KiB"
    if store.once >= 0:
        console.print(
            f"{first} more than that, once per store (tables, indexes, a compression dictionary)"
        )
    else:  # e.g. pages freed by hibernation, which the later sessions reused
        console.print(f"{first} less than that")
    if memory.storage is None:
        console.print(f"  measured by: {HEAP_METHOD}")
        return
    console.print(
        f"  measured by: {escape(store.method)} (the backend's figure); live data by {HEAP_METHOD}"
    )
    console.print(
        f"  in this process's heap: {memory.heap.active:,.0f} B active, "
        f"{memory.heap.hibernated:,.0f} B hibernated (tracemalloc)"
    )


def _run(
    console: Console,
    backend: str,
    options: dict[str, Any],
    count: int,
    active_share: float,
    seed: int,
    memory: SessionMemory,
    backlog: int,
) -> None:
    rng = random.Random(seed)
    clock = torpor.ManualClock()
    with _open(backend, clock, options) as mgr:
        ids: list[str] = []
        creating = 0.0  # the generator's time is not torpor's
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("creating sessions", total=count)
            for i in range(count):
                name = utf8_name(rng) if i % 10 == 0 else None
                data = chat_session(rng)
                started = time.perf_counter()
                ids.append(mgr.create(data, name=name).id)
                creating += time.perf_counter() - started
                if i % 1000 == 0:
                    progress.update(task, completed=i)
        example = next((i for i in ids if not i.isascii()), ids[0])
        console.print(
            f"created {len(ids):,} sessions, {creating / len(ids) * 1e6:,.0f} µs per create, "
            f"e.g. [green]{escape(example)}[/]"
        )

        clock.advance(IDLE_MS)  # time passes...
        busy = set(rng.sample(ids, int(len(ids) * active_share)))
        for sid in busy:
            mgr.touch(sid)  # ...during which some users stay active
        before = mgr.stats()
        rss_before = resident_bytes()
        started = time.perf_counter()
        hibernated = mgr.hibernate_idle()
        took = time.perf_counter() - started
        after = mgr.stats()
        rss_after = resident_bytes()
        _table(console, before, after, memory, hibernated, took)
        if rss_before is not None and rss_after is not None:
            console.print(
                f"process RSS (the OS's figure): {_mib(rss_before)} before, "
                f"{_mib(rss_after)} after: Python keeps freed memory for its next "
                "allocations, so RSS seldom shrinks"
            )

        idle = next((sid for sid in ids if sid not in busy), None)
        if idle is not None:
            woken = mgr.get(idle)
            if woken is None or woken.hibernated:
                raise click.ClickException("get() did not wake the session")  # a torpor bug
            console.print(
                f"get() woke {escape(idle[:30])}...: {len(woken.data['history'])} turns intact"
            )

        _iterate(console, mgr)
        _priority(console, mgr, backlog)


def _table(
    console: Console,
    before: torpor.Stats,
    after: torpor.Stats,
    memory: SessionMemory,
    hibernated: int,
    took: float,
) -> None:
    table = Table(title=f"hibernate_idle(30 s): {hibernated:,} sessions in {took:.2f} s")
    measured = memory.storage is not None  # the backend's own figure, cheap to read
    for column in ("", "sessions", "active", "hibernated", "store" if measured else "store (est.)"):
        table.add_column(column, justify="right")
    for label, st in (("before", before), ("after", after)):
        held = st.memory_bytes if measured else memory.store.total(st.active, st.hibernated)
        table.add_row(label, f"{st.sessions:,}", f"{st.active:,}", f"{st.hibernated:,}", _mib(held))
    console.print(table)
    if measured:
        method = before.memory_method or "the backend does not say how it measures"
        console.print(f"store: the backend's figure, {escape(method)}")
    else:
        console.print(
            "store (est.): the sample's bytes per active and per hibernated session times "
            "these counts, plus what its first sessions took once; this run is not traced "
            "(tracing every allocation makes it several times slower)"
        )


def _iterate(console: Console, mgr: torpor.Manager) -> None:
    # Traced only during the walk: the peak counts what the walk allocates.
    started_tracing = not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        started = time.perf_counter()
        seen = sum(1 for _ in mgr.ids(batch_size=1000))
        took = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        if started_tracing:
            tracemalloc.stop()
    console.print(
        f"ids(): walked {seen:,} sessions ({mgr.stats().iteration} iteration) in {took:.2f} s, "
        f"peak extra memory {peak / 1024:,.0f} KiB (tracemalloc)"
    )


def _priority(console: Console, mgr: torpor.Manager, backlog: int) -> None:
    worker = mgr.create({"role": "worker"}, name="ワーカー")
    for i in range(backlog):
        mgr.send(worker.id, {"job": i})
    started = time.perf_counter()
    mgr.send(worker.id, {"control": "shutdown"}, priority=True)
    first = mgr.receive(worker.id)
    took = (time.perf_counter() - started) * 1e6
    console.print(
        f"priority: with {backlog:,} jobs queued, the shutdown message came out first "
        f"({escape(repr(first[0]))}) in {took:,.0f} µs; {mgr.pending(worker.id):,} jobs still "
        "queued"
    )

    blocked = mgr.create({"role": "listener"})
    outcome: dict[str, Any] = {}

    def consumer() -> None:
        try:
            mgr.receive(blocked.id, timeout=30)
        except torpor.SessionCancelled as exc:
            outcome["error"] = exc
            outcome["at"] = time.perf_counter()

    thread = threading.Thread(target=consumer)
    thread.start()
    while mgr.waiters(blocked.id) < 1 and thread.is_alive():
        time.sleep(0.001)  # until the consumer is inside receive()
    cancelled_at = time.perf_counter()
    mgr.cancel(blocked.id)
    thread.join()
    console.print(
        "cancel: a consumer blocked in receive() got SessionCancelled after "
        f"{(outcome['at'] - cancelled_at) * 1e3:.2f} ms"
    )
