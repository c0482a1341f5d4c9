"""What a session costs in memory, measured the way a user would: tracemalloc.

Tracing every allocation makes CPython several times slower, so the demo traces only
a separate store of a few thousand sample sessions and leaves its big run untraced
(DESIGN.md §11, honest figures: real allocations, never ``sys.getsizeof``).
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torpor

__all__ = ["HEAP_METHOD", "Costs", "SessionMemory", "measure_sessions", "resident_bytes"]

HEAP_METHOD = "tracemalloc (bytes allocated through Python and still held)"
"""How the heap figures are measured, as the demo prints it.  Memory a C library takes
with its own malloc (zstd contexts, an LMDB map) is not traced."""


@dataclass(frozen=True, slots=True)
class Costs:
    """What a store holds, in bytes: ``active`` and ``hibernated`` per session (what one
    more session adds: record, id, indexes, data as kept), and ``once``, what its first
    sessions took beyond that (tables, indexes, a compression dictionary)."""

    active: float
    hibernated: float
    once: float
    method: str

    def total(self, active: int, hibernated: int) -> float:
        """Bytes a store of that many active and hibernated sessions holds."""
        return self.once + active * self.active + hibernated * self.hibernated


@dataclass(frozen=True, slots=True)
class SessionMemory:
    """Memory per session, measured over ``sessions`` sample sessions.

    ``live`` is the session data as the application's own Python objects: what holding
    a session live costs.  ``heap`` is what the store holds in the Python heap;
    ``storage`` the backend's own ``stats().memory_bytes``, when asked for (a store
    keeping its sessions elsewhere, e.g. in a file, where tracemalloc does not look).
    """

    sessions: int
    live: float
    heap: Costs
    storage: Costs | None = None

    @property
    def store(self) -> Costs:
        """Where the sessions are kept: the backend's storage if it reports it, else the
        heap."""
        return self.heap if self.storage is None else self.storage

    @property
    def hibernated_share(self) -> float:
        """A hibernated session's cost in the store as a fraction of its live size."""
        return self.store.hibernated / self.live


@dataclass(frozen=True, slots=True)
class _Reading:
    traced: int
    reported: int | None


def measure_sessions(
    mgr: torpor.Manager,
    clock: torpor.ManualClock,
    make_data: Callable[[], dict[str, Any]],
    count: int,
    *,
    idle_ms: int,
    storage: bool = False,
) -> SessionMemory:
    """Trace ``count`` sessions made by ``make_data()`` as live data, then in ``mgr``
    (an empty store on ``clock``) active and hibernated (after ``idle_ms``, which must
    exceed the manager's ``hibernate_after_ms``).

    The per-session figures come from the second half: the first one pays for what the
    store allocates once (ets_like trains its zstd dictionary on its first 256
    hibernations), which a big store spreads over many more sessions.  ``storage``
    also reads the backend's ``stats().memory_bytes`` at the same points.
    """
    if count < 2:
        raise ValueError("count must be at least 2: half of them warm the store up")
    first = count // 2
    measured = count - first
    with _tracing():
        live = _live(make_data, count)
        empty = _read(mgr, storage)
        _fill(mgr, make_data, first)
        _hibernate(mgr, clock, idle_ms, first)
        warm = _read(mgr, storage)
        _fill(mgr, make_data, measured)
        active = _read(mgr, storage)
        _hibernate(mgr, clock, idle_ms, measured)
        resting = _read(mgr, storage)
    readings = (empty, warm, active, resting)
    heap = _costs([r.traced for r in readings], first, measured, HEAP_METHOD)
    reported = [r.reported for r in readings if r.reported is not None]
    if len(reported) < len(readings):
        return SessionMemory(count, live / count, heap)
    method = mgr.stats().memory_method or "the backend does not say how it measures"
    return SessionMemory(count, live / count, heap, _costs(reported, first, measured, method))


def resident_bytes() -> int | None:
    """The process's resident set size as the OS reports it now (Linux), else None."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _costs(readings: list[int], first: int, measured: int, method: str) -> Costs:
    """``readings``: bytes held empty, with ``first`` sessions hibernated, with
    ``measured`` more active, then with those hibernated too."""
    empty, warm, active, resting = readings
    hibernated = (resting - warm) / measured
    return Costs((active - warm) / measured, hibernated, warm - empty - first * hibernated, method)


def _live(make_data: Callable[[], dict[str, Any]], count: int) -> int:
    # Slots exist before the baseline: only the data's own objects are counted.  The
    # data is dropped before the store is measured: encoding a str caches its UTF-8
    # form inside it, which the application's objects, not the store, would hold.
    held: list[dict[str, Any] | None] = [None] * count
    base = _traced()
    for i in range(count):
        held[i] = make_data()
    return _traced() - base


def _fill(mgr: torpor.Manager, make_data: Callable[[], dict[str, Any]], count: int) -> None:
    for _ in range(count):
        # Neither the data nor the returned Session is kept: only the store's share
        # is counted.
        mgr.create(make_data())
    _flush(mgr)


def _hibernate(mgr: torpor.Manager, clock: torpor.ManualClock, idle_ms: int, count: int) -> None:
    clock.advance(idle_ms)
    done = mgr.hibernate_idle()
    if done != count:
        raise RuntimeError(f"hibernate_idle() hibernated {done} of {count} sample sessions")
    _flush(mgr)


@contextmanager
def _tracing() -> Iterator[None]:
    # A process already tracing (python -X tracemalloc) keeps its tracing afterwards.
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        yield
    finally:
        if started:
            tracemalloc.stop()


def _traced() -> int:
    gc.collect()  # garbage awaiting the cyclic collector is not a session's cost
    return tracemalloc.get_traced_memory()[0]


def _flush(mgr: torpor.Manager) -> None:
    # Buffered touches would otherwise be counted as the sessions' cost.
    flush = getattr(mgr, "flush", None)
    if flush is not None:
        flush()


def _read(mgr: torpor.Manager, storage: bool) -> _Reading:
    reported = mgr.stats().memory_bytes if storage else None  # first: stats allocates
    return _Reading(_traced(), reported)
