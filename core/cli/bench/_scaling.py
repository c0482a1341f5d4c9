"""Costs that depend on the size of the store: the ``ids()`` and ``sessions()`` walks
per session, and an expiry sweep per removed session, at each size asked for.

Every repetition gets a fresh store of each size whose sessions all expire once the
manual clock jumps: walked while alive, then swept in one ``cleanup_expired()``.  A
backend whose profile can copy a store is filled once per size and copied for each
repetition; others are filled again (untimed).  The peak memory of each walk is
measured by tracemalloc in an untimed pass over the first repetition's store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

import torpor
from torpor.cli._sweep_bench import open_filled, scratch_storage
from torpor.cli.bench._context import QUIET, Context
from torpor.cli.bench._memory import MemoryFigure, walk_peak
from torpor.cli.bench._runner import Block, Case

__all__ = ["scaling_blocks"]

_TIMEOUT_MS = 1_000
_JUMP_MS = 10 * _TIMEOUT_MS


def _names(size: int) -> tuple[str, str, str]:
    return (
        f"ids() walk, {size:,} sessions",
        f"sessions() walk, {size:,} sessions",
        f"expiry sweep, {size:,} sessions",
    )


def scaling_blocks(ctx: Context, memory: list[MemoryFigure]) -> list[Block]:
    """One block per size; ``memory`` receives the walks' peaks as they are measured."""
    sizes = ctx.settings.sweep_sizes
    smallest = _names(sizes[0])
    blocks = []
    for size in sizes:
        names = _names(size)
        whats = (
            f"ids(batch_size={ctx.settings.walk_batch}) over every session, per session",
            f"sessions(batch_size={ctx.settings.walk_batch}) over every session, per session",
            "cleanup_expired() with every session expired, per removed session",
        )
        raw = ctx.profile.scaling_raw
        floors: tuple[tuple[str, ...], ...] = ((), (), ())
        if raw is not None:
            # The raw engine's own walk and sweep at this size (redis: pipelined ZRANGE
            # + MGET), run as a block of its own and divided into torpor's: the walks
            # by its walk, the sweep by its walk and by its sweep.
            raw_block = raw(ctx, size)
            walk, sweep = (case.name for case in raw_block.cases)
            floors = ((walk,), (walk,), (walk, sweep))
            blocks.append(raw_block)
        cases = tuple(
            Case(
                name,
                "session",
                (() if size == sizes[0] else (first,)) + floor,
                size=size,
                calls=size,
                what=what,
            )
            for name, first, what, floor in zip(names, smallest, whats, floors, strict=True)
        )
        blocks.append(Block(cases, _runner(ctx, size, memory), warm_up=False))
    return blocks


def _runner(
    ctx: Context, size: int, memory: list[MemoryFigure]
) -> Callable[[], tuple[float, float, float]]:
    template = _template(ctx, size)
    batch = ctx.settings.walk_batch
    measured_memory = [False]

    def run() -> tuple[float, float, float]:
        clock = torpor.ManualClock()
        with (
            scratch_storage(ctx.backend, ctx.options) as storage,
            _store(ctx, storage, template, clock, size) as mgr,
        ):
            if not measured_memory[0]:
                measured_memory[0] = True
                memory.extend(_walk_memory(mgr, size, batch))
            started = time.perf_counter()
            walked = sum(1 for _ in mgr.ids(batch_size=batch))
            ids_s = time.perf_counter() - started
            started = time.perf_counter()
            read = sum(1 for _ in mgr.sessions(batch_size=batch))
            sessions_s = time.perf_counter() - started
            clock.advance(_JUMP_MS)
            started = time.perf_counter()
            removed = mgr.cleanup_expired()
            sweep_s = time.perf_counter() - started
            left = len(mgr)
        if walked != size or read != size or removed != size or left:
            raise click.ClickException(
                f"bench: a store of {size:,} sessions walked {walked:,} ids and {read:,} "
                f"sessions, and cleanup_expired() removed {removed:,} ({left:,} left)"
            )
        return ids_s / size, sessions_s / size, sweep_s / removed

    return run


def _walk_memory(mgr: torpor.Manager, size: int, batch: int) -> list[MemoryFigure]:
    what = f"tracemalloc peak above the start, batch_size={batch}"
    return [
        MemoryFigure(
            f"ids() walk peak, {size:,} sessions",
            walk_peak(lambda: sum(1 for _ in mgr.ids(batch_size=batch))),
            what,
            size,
        ),
        MemoryFigure(
            f"sessions() walk peak, {size:,} sessions",
            walk_peak(lambda: sum(1 for _ in mgr.sessions(batch_size=batch))),
            what,
            size,
        ),
    ]


def _fill(ctx: Context, size: int) -> Callable[[torpor.Manager], None]:
    data = ctx.settings.data

    def fill(mgr: torpor.Manager) -> None:
        with ctx.progress(f"filling {size:,} sessions", size) as advance:
            for i in range(size):
                mgr.create(data[i % len(data)], timeout_ms=_TIMEOUT_MS)
                advance(i)

    return fill


def _template(ctx: Context, size: int) -> Path | None:
    """A closed store of ``size`` sessions to copy, if the backend can copy one."""
    profile = ctx.profile
    if profile.clone is None:
        return None
    storage = ctx.storage()
    fast = profile.fast_fill or {}
    options = {**storage, **QUIET, **fast}
    with torpor.open(ctx.backend, clock=torpor.ManualClock(), **options) as filler:
        _fill(ctx, size)(filler)
    return Path(storage["path"])


def _store(
    ctx: Context,
    storage: dict[str, Any],
    template: Path | None,
    clock: torpor.ManualClock,
    size: int,
) -> torpor.Manager:
    if template is not None and ctx.profile.clone is not None:
        ctx.profile.clone(template, Path(storage["path"]))
        return torpor.open(ctx.backend, clock=clock, **{**storage, **QUIET})
    return open_filled(ctx.backend, storage, clock, _fill(ctx, size), **QUIET)
