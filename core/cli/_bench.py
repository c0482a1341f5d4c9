"""``torpor bench``: what each operation costs, as ratios against baselines measured
in the same run (docs/performance.md explains every figure).  Nothing here is
asserted by tests; the figures are for humans and notes.

Every case of one backend runs once per repetition, interleaved (A B C A B C ...),
and each ratio is taken between the paired samples of one repetition before the
median is: see ``torpor.cli.bench``.  ``--json`` keeps every sample, ``--plot`` draws
them (matplotlib, the ``torpor[plot]`` extra).

``--urgent-close N`` and ``--cleanup-scaling`` add the sweep figures of
``torpor.cli._sweep_bench`` and check them against their limits: a figure that misses
its limit ends the command with status 1 and says which (``--no-check`` only reports).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, get_args

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from torpor.cli._options import backend_options
from torpor.cli._sweep_bench import (
    CLEANUP_RATIO_LIMIT,
    URGENT_CLOSE_LIMIT_MS,
    CleanupFigure,
    SweepKind,
    cleanup_cost,
    urgent_close_mid_sweep,
)
from torpor.cli.bench._settings import MIN_REPEATS, QUICK
from torpor.sample import chat_session

SWEEPS: tuple[SweepKind, ...] = get_args(SweepKind)


def _sizes(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    """Click callback: ``"10000,100000"`` -> ``(10000, 100000)``."""
    if value is None:
        return None
    try:
        sizes = tuple(int(part.replace("_", "")) for part in value.split(","))
    except ValueError:
        sizes = ()
    if len(sizes) < 2 or min(sizes) < 1:
        raise click.BadParameter(
            f"{value!r} is not two or more positive sizes separated by commas (e.g. 10000,100000)",
            ctx=ctx,
            param=param,
        )
    return sizes


_SIZE = click.IntRange(min=1)


@click.command()
@click.option(
    "--backend",
    "backends",
    multiple=True,
    default=("ets_like",),
    show_default=True,
    help="Backend to measure (repeatable: each runs on its own, one after the other).",
)
@click.option("--sessions", type=_SIZE, help="Sessions per store read and written. [10,000]")
@click.option("--calls", type=_SIZE, help="Calls per block of a read case. [per backend]")
@click.option(
    "--write-calls", type=_SIZE, help="Calls per block of a case that writes. [per backend]"
)
@click.option(
    "--repeats",
    type=click.IntRange(min=MIN_REPEATS),
    help=f"Interleaved repetitions (at least {MIN_REPEATS}). [7]",
)
@click.option(
    "--sweep-sizes",
    callback=_sizes,
    help="Store sizes of the walk and expiry sweep cases. [5000,50000]",
)
@click.option(
    "--backlog",
    type=click.IntRange(min=0),
    help="Normal messages queued ahead of a priority receive. [100,000]",
)
@click.option(
    "--versus",
    metavar="PYTHON",
    help=(
        "Also run get/create/update under another Python's torpor (e.g. a venv with "
        "torpor 0.1) and under this one, alternately, on the same workload; the "
        "ets_like goals then compare whole code paths."
    ),
)
@click.option(
    "--quick",
    is_flag=True,
    help="Small stores and short blocks: every case in seconds (figures too noisy to quote).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write every sample, the ratios and the environment to this file.",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help='Draw the costs and the scaling to this PNG (needs "torpor[plot]").',
)
@backend_options
@click.option(
    "--urgent-close",
    "urgent_sessions",
    default=0,
    help=(
        "Also time close(urgent=True) in the middle of a hibernation sweep and of an "
        "expiry sweep over this many sessions (checked: under "
        f"{URGENT_CLOSE_LIMIT_MS:.0f} ms; the acceptance figure uses 100000)."
    ),
)
@click.option(
    "--cleanup-scaling",
    is_flag=True,
    help=(
        "Also time cleanup_expired() per removed session with 10,000 and with 100,000 "
        f"expired sessions (checked: the larger costs at most {CLEANUP_RATIO_LIMIT}x "
        "the smaller per session)."
    ),
)
@click.option(
    "--cleanup-sizes",
    default="10000,100000",
    callback=_sizes,
    hidden=True,  # smaller stores for tests; the ratio is last / first
)
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Exit with status 1 when a sweep figure misses its limit.",
)
def bench(
    backends: tuple[str, ...],
    json_path: Path | None,
    plot_path: Path | None,
    options: dict[str, str],
    urgent_sessions: int,
    cleanup_scaling: bool,
    cleanup_sizes: tuple[int, ...],
    check: bool,
    quick: bool,
    versus: str | None,
    **sizes: Any,
) -> None:
    """Cost of every operation per backend (get hot and cold, peek, create, update,
    delete, walks, expiry sweeps, hibernate and wake, priority receive), against the
    raw engine and older code paths, from interleaved repetitions; with
    --urgent-close and --cleanup-scaling, the sweep figures and their limits."""
    from torpor.cli.bench._report import print_result
    from torpor.cli.bench._run import run_backend

    if plot_path is not None:
        from torpor.cli.bench._plot import require_matplotlib

        require_matplotlib()
    given = {**(QUICK if quick else {}), **{k: v for k, v in sizes.items() if v is not None}}
    console = Console()
    results = []
    for backend in backends:
        result = run_backend(backend, options, given, console, versus)
        print_result(console, result)
        results.append(result)
    if json_path is not None:
        from torpor.cli.bench._json import write_json

        command = {
            "backends": list(backends), "options": options, "quick": quick, "versus": versus,
            **given,
        }  # fmt: skip
        write_json(json_path, results, command)
        console.print(f"every sample: {escape(str(json_path))}")
    if plot_path is not None:
        from torpor.cli.bench._plot import plot

        plot(plot_path, results)
        console.print(f"plot: {escape(str(plot_path))}")
    payloads = [chat_session(random.Random(i)) for i in range(64)]
    missed: list[str] = []
    for backend in backends:
        if urgent_sessions:
            missed += _urgent_close(console, backend, options, urgent_sessions, payloads)
        if cleanup_scaling:
            missed += _cleanup_scaling(console, backend, options, cleanup_sizes, payloads)
    if missed and check:
        raise click.ClickException("; ".join(missed))
    for message in missed:
        console.print(f"[yellow]limit missed (not checked, --no-check):[/] {escape(message)}")


def _urgent_close(
    console: Console,
    backend: str,
    options: dict[str, str],
    count: int,
    payloads: list[dict[str, Any]],
) -> list[str]:
    """Print the urgent-close figures; return a message for each one that misses."""
    figures = [
        urgent_close_mid_sweep(backend, options, count, sweep, payloads, console)
        for sweep in SWEEPS
    ]
    table = Table(
        title=f"close(urgent=True) mid-sweep (limit {URGENT_CLOSE_LIMIT_MS:.0f} ms)",
        caption=f"{backend}, {count:,} sessions of ~3 KB",
    )
    for column in ("sweep", "fill (s)", "swept before close", "close (ms)", "verdict"):
        table.add_column(column, justify="left" if column == "sweep" else "right")
    missed: list[str] = []
    for figure in figures:
        if not figure.mid_sweep:
            verdict = "[yellow]not mid-sweep[/]"
            missed.append(
                f"the {figure.sweep} sweep had swept {figure.swept_before_close:,} of "
                f"{count:,} sessions when close(urgent=True) ran, so the close did not "
                "overtake a running sweep; use more sessions"
            )
        elif figure.close_ms >= URGENT_CLOSE_LIMIT_MS:
            verdict = "[red]too slow[/]"
            missed.append(
                f"close(urgent=True) took {figure.close_ms:.1f} ms in the middle of a "
                f"{figure.sweep} sweep over {count:,} sessions on {backend}; the limit is "
                f"{URGENT_CLOSE_LIMIT_MS:.0f} ms"
            )
        else:
            verdict = "[green]ok[/]"
        table.add_row(
            figure.sweep,
            f"{figure.fill_s:.1f}",
            f"{figure.swept_before_close:,}",
            f"{figure.close_ms:.2f}",
            verdict,
        )
    console.print(table)
    return missed


def _cleanup_scaling(
    console: Console,
    backend: str,
    options: dict[str, str],
    sizes: tuple[int, ...],
    payloads: list[dict[str, Any]],
) -> list[str]:
    """Print the cleanup figures; return a message if the ratio misses its limit."""

    def progress(figure: CleanupFigure) -> None:
        console.print(
            f"cleanup_expired() over {figure.sessions:,} expired sessions: {figure.cleanup_s:.2f} s"
        )

    figures = cleanup_cost(backend, options, sizes, payloads, console, progress)
    first, last = figures[0], figures[-1]
    table = Table(
        title=f"cleanup_expired() per removed session (limit {CLEANUP_RATIO_LIMIT}x)",
        caption=f"{backend}, sessions of ~3 KB",
    )
    for column in ("expired sessions", "fill (s)", "cleanup (s)", "µs per session", "ratio"):
        table.add_column(column, justify="right")
    for figure in figures:
        table.add_row(
            f"{figure.sessions:,}",
            f"{figure.fill_s:.1f}",
            f"{figure.cleanup_s:.2f}",
            f"{figure.us_per_session:.1f}",
            f"{figure.us_per_session / first.us_per_session:.2f}x",
        )
    console.print(table)
    ratio = last.us_per_session / first.us_per_session
    console.print(
        f"cleanup_expired() per session, {last.sessions:,} vs {first.sessions:,} expired: "
        f"{ratio:.2f}x (limit {CLEANUP_RATIO_LIMIT}x)"
    )
    if ratio > CLEANUP_RATIO_LIMIT:
        return [
            f"cleanup_expired() costs {ratio:.2f}x as much per session with "
            f"{last.sessions:,} expired sessions as with {first.sessions:,} on {backend}; "
            f"the limit is {CLEANUP_RATIO_LIMIT}x"
        ]
    return []
