"""One backend's benchmark: build its blocks, run them interleaved, measure memory."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass

from rich.console import Console
from rich.progress import Progress

from torpor.cli.bench._cases import FLUSH_SHARE, manager_blocks
from torpor.cli.bench._context import Context
from torpor.cli.bench._goals import Goal, goals
from torpor.cli.bench._memory import MemoryFigure, session_memory
from torpor.cli.bench._profiles import Profile, profile_for
from torpor.cli.bench._runner import Case, RatioResult, Summary, ratios, run_interleaved
from torpor.cli.bench._scaling import scaling_blocks
from torpor.cli.bench._settings import Settings
from torpor.cli.bench._versus import versus_block

__all__ = ["BackendResult", "run_backend", "settings_for"]


@dataclass(frozen=True)
class BackendResult:
    backend: str
    options: Mapping[str, str]
    settings: Settings
    cases: tuple[Case, ...]
    samples: Mapping[str, list[float]]  # µs per unit, one per repetition
    ratios: tuple[RatioResult, ...]
    memory: tuple[MemoryFigure, ...]
    goals: tuple[Goal, ...]

    def summary(self, case: str) -> Summary:
        return Summary.of(self.samples[case])


def settings_for(profile: Profile, given: Mapping[str, object]) -> Settings:
    """Settings from the command's values, where ``None`` takes the profile's (block
    lengths) or the general default."""
    defaults: dict[str, object] = {
        "sessions": 10_000,
        "calls": profile.calls,
        "write_calls": profile.write_calls,
        "repeats": 7,
        "sweep_sizes": (5_000, 50_000),
        "backlog": 100_000,
    }
    chosen = {k: v for k, v in given.items() if v is not None}
    return Settings(**{**defaults, **chosen})  # type: ignore[arg-type]


def run_backend(
    backend: str,
    options: Mapping[str, str],
    given: Mapping[str, object],
    console: Console,
    versus: str | None = None,
) -> BackendResult:
    """``versus``: another Python whose torpor runs the same workload (``_versus``)."""
    profile = profile_for(backend)
    settings = settings_for(profile, given)
    memory: list[MemoryFigure] = []
    versus_label = ""
    with ExitStack() as stack:
        ctx = Context(backend, options, settings, profile, stack, console)
        with console.status(f"{backend}: preparing the stores"):
            blocks = manager_blocks(ctx) + scaling_blocks(ctx, memory)
            if versus is not None and profile.folder:
                console.print(f"--versus: not run on {backend} (its stores need a folder)")
            elif versus is not None:
                block, versus_label = versus_block(backend, versus, settings, stack)
                blocks.append(block)
        with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
            task = bar.add_task(f"{backend}: repetitions", total=settings.repeats)
            samples = run_interleaved(
                blocks, settings.repeats, lambda done: bar.update(task, completed=done)
            )
    if profile.heap:
        memory += session_memory(ctx)
    cases = tuple(c for b in blocks for c in b.cases)
    found = ratios(cases, samples)
    return BackendResult(
        backend,
        dict(options),
        settings,
        cases,
        samples,
        tuple(found),
        tuple(memory),
        tuple(
            goals(
                found,
                memory,
                profile.reference_label,
                buffered_touches=FLUSH_SHARE in samples,
                versus_label=versus_label,
            )
        ),
    )
