"""What the blocks of one backend share: its options, sizes, profile, and the stores
and managers opened for it (closed together when the run ends)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import Progress

import torpor
from torpor.cli._sweep_bench import open_filled, scratch_storage
from torpor.cli.bench._profiles import Profile
from torpor.cli.bench._settings import Settings

__all__ = ["QUIET", "Context", "timed"]

# The benchmark drives maintenance itself, on manual clocks: no sweeper thread, and
# no hibernation unless a case asks for it.
QUIET: Mapping[str, Any] = {"sweeper": False, "hibernate_after_ms": None}


def timed(fn: Callable[[Any], object], args: Sequence[Any]) -> float:
    """Seconds per call of ``fn`` over ``args`` (prepared beforehand, untimed)."""
    started = time.perf_counter()
    for arg in args:
        fn(arg)
    return (time.perf_counter() - started) / len(args)


@dataclass
class Context:
    backend: str
    options: Mapping[str, str]
    settings: Settings
    profile: Profile
    stack: ExitStack
    console: Console

    def storage(self) -> dict[str, Any]:
        """Storage of its own for one more manager, removed when the run ends."""
        return self.stack.enter_context(scratch_storage(self.backend, self.options))

    def filled(
        self,
        count: int,
        clock: torpor.ManualClock,
        *,
        backend: object = None,
        timeout_ms: int | None = 3_600_000,
        **manager: Any,
    ) -> tuple[torpor.Manager, list[str]]:
        """A manager (quiet unless ``manager`` says otherwise) over new storage holding
        ``count`` chat-like sessions, and their ids.  ``backend``: a backend object to
        open instead of the one named on the command line."""
        ids: list[str] = []
        data = self.settings.data

        def fill(mgr: torpor.Manager) -> None:
            with self.progress(f"filling {count:,} sessions", count) as advance:
                for i in range(count):
                    ids.append(mgr.create(data[i % len(data)], timeout_ms=timeout_ms).id)
                    advance(i)

        options = {**QUIET, **manager}
        if backend is not None:
            mgr = torpor.open(backend, clock=clock, **options)
            self.stack.callback(mgr.close)
            fill(mgr)
        else:
            mgr = open_filled(self.backend, self.storage(), clock, fill, **options)
            self.stack.callback(mgr.close)
        return mgr, ids

    def progress(self, label: str, total: int) -> _Progress:
        return _Progress(self.console, label, total)


class _Progress:
    """A transient progress bar for slow fills (nothing when not on a terminal)."""

    def __init__(self, console: Console, label: str, total: int) -> None:
        self._bar = Progress(console=console, transient=True, disable=not console.is_terminal)
        self._task = self._bar.add_task(label, total=total)

    def __enter__(self) -> Callable[[int], None]:
        self._bar.start()

        def advance(done: int) -> None:
            if done % 1000 == 0:
                self._bar.update(self._task, completed=done)

        return advance

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()
