"""Memory figures, measured the way a user would: tracemalloc over what the process
allocates (not ``sys.getsizeof`` of the data, which misses allocator slack, buffers
left behind by libraries and the store's own bookkeeping).  Per-session figures use
the demo's measure (``torpor.cli._memory``), so the two commands agree.

Each figure comes from a pass of its own, never from a timed block: tracing makes
every allocation several times slower.
"""

from __future__ import annotations

import gc
import random
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torpor
from torpor.cli._memory import SessionMemory, measure_sessions
from torpor.cli.bench._cases import HIBERNATE_MS
from torpor.cli.bench._context import QUIET, Context
from torpor.sample import chat_session

__all__ = ["MemoryFigure", "session_memory", "traced", "walk_peak"]


@dataclass(frozen=True)
class MemoryFigure:
    name: str
    bytes: float
    what: str
    size: int | None = None  # store size, for the figures that scale with it


@contextmanager
def traced() -> Iterator[Callable[[], tuple[int, int]]]:
    """Trace allocations inside the block; yields ``() -> (current, peak)`` in bytes
    allocated since the block began.  Tracing already on (``PYTHONTRACEMALLOC``) is
    left on."""
    gc.collect()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]

    def since() -> tuple[int, int]:
        current, peak = tracemalloc.get_traced_memory()
        return current - base, peak - base

    try:
        yield since
    finally:
        if not was_tracing:
            tracemalloc.stop()


def walk_peak(walk: Callable[[], object]) -> int:
    """Peak bytes allocated while ``walk()`` runs, above what was allocated before."""
    with traced() as memory:
        walk()
        return memory()[1]


def session_memory(ctx: Context) -> list[MemoryFigure]:
    """Bytes per chat-like session: as the application's live dict, and what the store
    holds for it active and hibernated (the demo's measure, ``torpor.cli._memory``);
    and active on the reference code path, if the profile has one."""
    n = ctx.settings.memory_sessions
    how = f"tracemalloc, the second half of {n:,} sessions"
    mine = _measure(ctx, None)
    figures = [
        MemoryFigure("live session data", mine.live, "tracemalloc, the application's dicts"),
        MemoryFigure("active session", mine.heap.active, how),
        MemoryFigure("hibernated session", mine.heap.hibernated, f"{how}, hibernated"),
        MemoryFigure("store, once", mine.heap.once, "what the first half took beyond that"),
    ]
    if ctx.profile.reference is not None:
        label = ctx.profile.reference_label
        old = _measure(ctx, ctx.profile.reference()).heap.active
        figures.append(MemoryFigure(f"active session, {label}", old, how))
    return figures


def _measure(ctx: Context, backend: object) -> SessionMemory:
    clock = torpor.ManualClock()
    rng = random.Random(0)
    options = {**QUIET, "hibernate_after_ms": HIBERNATE_MS}
    if backend is None:
        mgr = torpor.open(ctx.backend, clock=clock, **{**ctx.options, **options})
    else:
        mgr = torpor.open(backend, clock=clock, **options)
    with mgr:
        return measure_sessions(
            mgr,
            clock,
            lambda: chat_session(rng),
            ctx.settings.memory_sessions,
            idle_ms=2 * HIBERNATE_MS,
        )
