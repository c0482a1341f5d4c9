"""Sweep figures for ``torpor bench``: ``close(urgent=True)`` in the middle of a sweep,
and what ``cleanup_expired()`` costs per removed session as the store grows.

Both are checked here, in a benchmark a person runs, never in a timed unit test:

* ``close(urgent=True)`` returns in under ``URGENT_CLOSE_LIMIT_MS`` while the sweeper is
  in the middle of a hibernation sweep and of an expiry sweep (docs/contract.md §9);
* the cost of ``cleanup_expired()`` per removed session at the largest size is within
  ``CLEANUP_RATIO_LIMIT`` times its cost at the smallest (no quadratic deletes).

Time passes on a ``ManualClock``, so "idle" and "expired" need no sleeping.  Stores are
filled through the public API, one ``create`` (one commit) per session.  For ``lmdb``
the filling manager runs with ``durability="nosync"`` and is closed before the
measured manager opens the same folder with the options given on the command line
(``sync`` by default): only the filling is sped up, never what is measured (see
:func:`open_filled`).
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import click
from rich.console import Console
from rich.progress import Progress

import torpor
from torpor.cli.bench._profiles import profile_for

__all__ = [
    "CLEANUP_RATIO_LIMIT",
    "URGENT_CLOSE_LIMIT_MS",
    "CleanupFigure",
    "UrgentCloseFigure",
    "cleanup_cost",
    "open_filled",
    "scratch_storage",
    "urgent_close_mid_sweep",
]

URGENT_CLOSE_LIMIT_MS = 100.0
CLEANUP_RATIO_LIMIT = 1.5

SweepKind = Literal["hibernation", "expiry"]

# Manual-clock times: sessions become idle (hibernation) or expired (expiry) when the
# clock jumps by _JUMP_MS after filling; until then no sweep has anything to do.
_SHORT_MS = 1_000
_JUMP_MS = 10 * _SHORT_MS
_FIRST_BATCH_WAIT_S = 300.0


@dataclass(frozen=True)
class UrgentCloseFigure:
    sweep: SweepKind
    sessions: int
    fill_s: float
    swept_before_close: int  # sessions the sweep had converted when close returned
    close_ms: float

    @property
    def mid_sweep(self) -> bool:
        """The close overtook a running sweep (it had neither finished nor started
        late)."""
        return 0 < self.swept_before_close < self.sessions


@dataclass(frozen=True)
class CleanupFigure:
    sessions: int
    fill_s: float
    removed: int
    cleanup_s: float

    @property
    def us_per_session(self) -> float:
        return self.cleanup_s / max(self.removed, 1) * 1e6


class _SweepWatch:
    """Observer plugin: counts the sessions one kind of sweep converts and signals the
    end of its first batch (sweeps emit one event per batch)."""

    def __init__(self, kind: torpor.EventKind) -> None:
        self.kind = kind
        self.count = 0
        self.first_batch = threading.Event()

    def torpor_event(self, event: torpor.LifecycleEvent) -> None:
        if event.kind is self.kind:
            self.count += event.count
            self.first_batch.set()


@contextmanager
def scratch_storage(backend: str, options: Mapping[str, str]) -> Iterator[dict[str, Any]]:
    """Options for one more manager over storage of its own: a new folder when the
    backend keeps one (``lmdb``, or any backend given a ``path``), or what the
    profile's ``scratch`` makes (redis: a namespace), removed afterwards."""
    profile = profile_for(backend)
    if profile.scratch is not None:  # a server's namespace, say: the profile makes one
        with profile.scratch(options) as storage:
            yield storage
        return
    if not profile.folder and "path" not in options:
        yield dict(options)
        return
    with tempfile.TemporaryDirectory(prefix="torpor-bench-", ignore_cleanup_errors=True) as d:
        yield {**options, "path": d}


def open_filled(
    backend: str,
    storage: Mapping[str, Any],
    clock: torpor.ManualClock,
    fill: Callable[[torpor.Manager], object],
    **manager: Any,
) -> torpor.Manager:
    """A manager opened with ``manager`` options over a store ``fill`` has filled.

    A backend whose profile names ``fast_fill`` options is filled by a manager of its
    own under them, closed before the measured manager opens the same store with the
    options given: only the filling is sped up, never what is measured."""
    fast = profile_for(backend).fast_fill
    if fast is not None:
        quiet: dict[str, Any] = {"sweeper": False, "hibernate_after_ms": None}
        with torpor.open(backend, clock=clock, **{**storage, **quiet, **fast}) as filler:
            fill(filler)
        return torpor.open(backend, clock=clock, **{**storage, **manager})
    mgr = torpor.open(backend, clock=clock, **{**storage, **manager})
    try:
        fill(mgr)
    except BaseException:
        mgr.close(urgent=True)
        raise
    return mgr


def _open_filled(
    backend: str,
    storage: dict[str, Any],
    clock: torpor.ManualClock,
    count: int,
    payloads: Sequence[dict[str, Any]],
    console: Console,
    *,
    timeout_ms: int | None,
    **manager: Any,
) -> tuple[torpor.Manager, float]:
    """A manager opened with ``manager`` options over a store holding ``count`` new
    sessions; also the seconds the filling took."""
    took = [0.0]

    def fill(mgr: torpor.Manager) -> None:
        started = time.perf_counter()
        with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
            task = progress.add_task(f"filling {count:,} sessions", total=count)
            for i in range(count):
                mgr.create(payloads[i % len(payloads)], timeout_ms=timeout_ms)
                if i % 1000 == 0:
                    progress.update(task, completed=i)
        took[0] = time.perf_counter() - started

    mgr = open_filled(backend, storage, clock, fill, **manager)
    return mgr, took[0]


def _wait_for_first_batch(watch: _SweepWatch, sweeper: Any, passes: int, what: str) -> None:
    """Until the sweep has converted its first batch.  A pass that began after the
    sessions became due (so the second pass to end after ``passes``) and converted
    nothing means the sweep failed (the sweeper logs why): no point waiting longer."""
    deadline = time.monotonic() + _FIRST_BATCH_WAIT_S
    while not watch.first_batch.wait(0.05):
        if sweeper.passes >= passes + 2 and not watch.first_batch.is_set():
            raise click.ClickException(f"{what} ended a pass without converting a session")
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"{what} did not finish a batch in {_FIRST_BATCH_WAIT_S:.0f} s"
            )


def urgent_close_mid_sweep(
    backend: str,
    options: dict[str, str],
    count: int,
    sweep: SweepKind,
    payloads: Sequence[dict[str, Any]],
    console: Console,
) -> UrgentCloseFigure:
    """Fill ``count`` sessions, make them all idle (``hibernation``) or expired
    (``expiry``), start the background sweeper on them, and once its first batch is
    done time ``close(urgent=True)``."""
    clock = torpor.ManualClock()
    if sweep == "hibernation":
        watch = _SweepWatch(torpor.EventKind.HIBERNATED)
        manager: dict[str, Any] = {
            "hibernate_after_ms": _SHORT_MS,
            "cleanup_interval_ms": 3_600_000,  # no expiry pass gets in the way
        }
        timeout_ms: int | None = None  # the default (an hour): idle, never expired
    else:
        watch = _SweepWatch(torpor.EventKind.EXPIRED)
        manager = {"hibernate_after_ms": None, "cleanup_interval_ms": _SHORT_MS}
        timeout_ms = _SHORT_MS
    with scratch_storage(backend, options) as storage:
        mgr, fill_s = _open_filled(
            backend,
            storage,
            clock,
            count,
            payloads,
            console,
            timeout_ms=timeout_ms,
            plugins=[watch],
            **manager,
        )
        try:
            sweeper = mgr.sweeper
            if sweeper is None:
                raise click.ClickException(f"{backend}: the manager started no sweeper")
            passes = sweeper.passes
            clock.advance(_JUMP_MS)
            sweeper.kick()
            _wait_for_first_batch(watch, sweeper, passes, f"{backend}: the {sweep} sweep")
            started = time.perf_counter()
            mgr.close(urgent=True)
            close_ms = (time.perf_counter() - started) * 1e3
        finally:
            mgr.close(urgent=True)  # idempotent; releases the store if anything failed
    return UrgentCloseFigure(sweep, count, fill_s, watch.count, close_ms)


def cleanup_cost(
    backend: str,
    options: dict[str, str],
    sizes: Sequence[int],
    payloads: Sequence[dict[str, Any]],
    console: Console,
    report: Callable[[CleanupFigure], None] = lambda figure: None,
) -> list[CleanupFigure]:
    """For each size, in a fresh store: fill it with sessions of a short timeout, let
    the clock pass it, and time ``cleanup_expired()`` over all of them."""
    figures = []
    for size in sizes:
        clock = torpor.ManualClock()
        with scratch_storage(backend, options) as storage:
            mgr, fill_s = _open_filled(
                backend,
                storage,
                clock,
                size,
                payloads,
                console,
                timeout_ms=_SHORT_MS,
                sweeper=False,
                hibernate_after_ms=None,
            )
            with mgr:
                clock.advance(_JUMP_MS)
                started = time.perf_counter()
                removed = mgr.cleanup_expired()
                took = time.perf_counter() - started
                left = len(mgr)
        if removed != size or left != 0:  # a torpor bug, not a slow figure
            raise click.ClickException(
                f"cleanup_expired() removed {removed:,} of {size:,} expired sessions; {left:,} left"
            )
        figure = CleanupFigure(size, fill_s, removed, took)
        report(figure)
        figures.append(figure)
    return figures
