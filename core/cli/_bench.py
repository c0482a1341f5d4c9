"""``torpor bench``: per-call costs, as ratios against a baseline measured in the
same run.  Nothing here is asserted by tests; figures are for humans and notes."""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.table import Table

import torpor
from torpor._sample import chat_session


def per_call_us(fn: Callable[[int], object], calls: int, repeats: int = 5) -> float:
    """Median over ``repeats`` runs of the mean cost of ``fn(i)``, in microseconds."""
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(calls):
            fn(i)
        runs.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(runs)


@click.command()
@click.option("--backend", default="ets_like", show_default=True)
@click.option("--sessions", "count", default=10_000, show_default=True)
@click.option("--calls", default=20_000, show_default=True, help="Calls per timed run.")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="Backend option.")
@click.option(
    "--urgent-close",
    "urgent_sessions",
    default=0,
    help="Also time close(urgent=True) in the middle of a sweep over this many sessions.",
)
def bench(
    backend: str, count: int, calls: int, options: tuple[str, ...], urgent_sessions: int
) -> None:
    """Cost of get/create: fast path vs pluggy dispatch vs the raw engine."""
    console = Console()
    rng = random.Random(1)
    backend_options = dict(o.split("=", 1) for o in options)
    if backend == "lmdb" and "path" not in backend_options:
        backend_options["path"] = tempfile.mkdtemp(prefix="torpor-bench-")
    payloads = [chat_session(rng) for _ in range(64)]
    rows: list[tuple[str, float, str]] = []
    common: dict[str, Any] = {"sweeper": False, "hibernate_after_ms": None, **backend_options}
    with (
        torpor.open(backend, **common) as fast,
        torpor.open(
            _sibling(backend, backend_options),
            fast_path=False,
            sweeper=False,
            hibernate_after_ms=None,
        ) as dispatched,
    ):
        ids = [fast.create(payloads[i % 64]).id for i in range(count)]
        other = [dispatched.create(payloads[i % 64]).id for i in range(count)]
        get_fast = per_call_us(lambda i: fast.get(ids[i % count]), calls)
        get_hook = per_call_us(lambda i: dispatched.get(other[i % count]), calls)
        peek_fast = per_call_us(lambda i: fast.peek(ids[i % count]), calls)
        create_fast = per_call_us(lambda i: fast.create(payloads[i % 64]), calls // 4)
        rows += [
            ("get, fast path", get_fast, "1.00x"),
            ("get, dispatched through pluggy", get_hook, f"{get_hook / get_fast:.2f}x of fast"),
            ("peek, fast path", peek_fast, f"{peek_fast / get_fast:.2f}x of get"),
            ("create, fast path", create_fast, ""),
        ]
    if urgent_sessions:
        latency, done = _urgent_close(backend, backend_options, urgent_sessions)
        rows.append(
            (
                f"close(urgent=True) mid-sweep ({done:,}/{urgent_sessions:,} hibernated)",
                latency,
                "",
            )
        )
    table = Table(title=f"torpor bench: {backend}, {count:,} sessions of ~3 KB")
    table.add_column("operation")
    table.add_column("µs per call", justify="right")
    table.add_column("ratio", justify="right")
    for name, cost, ratio in rows:
        table.add_row(name, f"{cost:.2f}", ratio)
    console.print(table)


def _urgent_close(backend: str, options: dict[str, str], count: int) -> tuple[float, int]:
    """Start a sweep over ``count`` idle sessions, close urgently once it is under way;
    return (µs that close took, sessions hibernated before it stopped)."""
    import threading

    clock = torpor.ManualClock()
    progress = {"hibernated": 0}
    under_way = threading.Event()

    class Watch:
        def torpor_event(self, event: torpor.LifecycleEvent) -> None:
            if event.kind is torpor.EventKind.HIBERNATED:
                progress["hibernated"] += event.count
                under_way.set()

    mgr = torpor.open(
        backend,
        clock=clock,
        hibernate_after_ms=1_000,
        cleanup_interval_ms=3_600_000,
        plugins=[Watch()],
        **options,
    )
    for i in range(count):
        mgr.create({"i": i})
    clock.advance(10_000)
    assert mgr.sweeper is not None
    mgr.sweeper.kick()
    under_way.wait()
    started = time.perf_counter()
    mgr.close(urgent=True)
    return (time.perf_counter() - started) * 1e6, progress["hibernated"]


def _sibling(backend: str, options: dict[str, str]) -> str:
    # A second manager over separate storage, so the two runs do not share state.
    if "path" in options:
        options["path"] = tempfile.mkdtemp(prefix="torpor-bench-")
    return backend
