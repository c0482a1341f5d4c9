"""``torpor demo``: the main job on the embedded default, end to end.

Creates many chat-like sessions, lets time pass on a manual clock, hibernates the
idle ones, shows memory before and after, walks the store natively, and shows a
priority message and a cancel overtaking a backlog.
"""

from __future__ import annotations

import random
import threading
import time
import tracemalloc
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

import torpor
from torpor.cli._options import backend_options
from torpor.sample import chat_session, utf8_name


def _mib(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 2**20:,.1f} MiB"


@click.command()
@click.option("--backend", default="ets_like", show_default=True, help="Backend to run on.")
@click.option("--sessions", "count", default=100_000, show_default=True, help="Sessions to create.")
@click.option("--active-share", default=0.1, show_default=True, help="Share of sessions kept busy.")
@click.option("--backlog", default=100_000, show_default=True, help="Normal messages queued.")
@click.option("--seed", default=7, show_default=True)
@backend_options
def demo(
    backend: str, count: int, active_share: float, backlog: int, seed: int, options: dict[str, str]
) -> None:
    """Create sessions, hibernate the idle ones, iterate, and overtake a backlog."""
    console = Console()
    rng = random.Random(seed)
    clock = torpor.ManualClock()
    tracemalloc.start()
    with torpor.open(
        backend,
        clock=clock,
        hibernate_after_ms=30_000,
        default_timeout_ms=24 * 3_600_000,
        sweeper=False,  # the demo drives maintenance itself, on its manual clock
        **options,
    ) as mgr:
        console.print(f"[bold]torpor demo[/] on [cyan]{mgr.backend_name}[/]: {count:,} sessions")
        ids: list[str] = []
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("creating sessions", total=count)
            for i in range(count):
                name = utf8_name(rng) if i % 10 == 0 else None
                ids.append(mgr.create(chat_session(rng), name=name).id)
                if i % 1000 == 0:
                    progress.update(task, completed=i)
        sample = next(i for i in ids if not i.isascii())
        console.print(f"created {len(ids):,} sessions, e.g. [green]{sample}[/]")

        clock.advance(10 * 60_000)  # ten minutes pass...
        busy = rng.sample(ids, int(len(ids) * active_share))
        for sid in busy:  # ...during which some users stay active
            mgr.touch(sid)
        before = mgr.stats()
        traced_before = tracemalloc.get_traced_memory()[0]
        started = time.perf_counter()
        hibernated = mgr.hibernate_idle()
        took = time.perf_counter() - started
        after = mgr.stats()
        traced_after = tracemalloc.get_traced_memory()[0]

        table = Table(title=f"hibernate_idle(30 s): {hibernated:,} sessions in {took:.2f} s")
        for column in ("", "sessions", "active", "hibernated", "session data", "process (traced)"):
            table.add_column(column, justify="right")
        for label, st, traced in (
            ("before", before, traced_before),
            ("after", after, traced_after),
        ):
            table.add_row(
                label,
                f"{st.sessions:,}",
                f"{st.active:,}",
                f"{st.hibernated:,}",
                _mib(st.memory_bytes),
                _mib(traced),
            )
        console.print(table)
        if before.memory_bytes and after.memory_bytes:
            idle_before = before.memory_bytes * (1 - active_share)
            idle_after = after.memory_bytes - before.memory_bytes * active_share
            console.print(
                f"idle sessions: {_mib(int(idle_before))} live -> {_mib(int(idle_after))} "
                f"hibernated ({idle_before / max(idle_after, 1):.1f}x smaller)"
            )

        woken = mgr.get(ids[0])
        if woken is None or woken.hibernated:
            raise click.ClickException("get() did not wake the session")  # a torpor bug
        console.print(f"get() woke {ids[0][:30]}...: {len(woken.data['history'])} turns intact")

        _iterate(console, mgr)
        _priority(console, mgr, backlog)


def _iterate(console: Console, mgr: torpor.Manager) -> None:
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    seen = sum(1 for _ in mgr.ids(batch_size=1000))
    took = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] - base
    console.print(
        f"ids(): walked {seen:,} sessions ({mgr.stats().iteration} iteration) in {took:.2f} s, "
        f"peak extra memory {peak / 1024:,.0f} KiB"
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
        f"({first[0]}) in {took:,.0f} µs; {mgr.pending(worker.id):,} jobs still queued"
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
