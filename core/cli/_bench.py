"""``torpor bench``: per-call costs, as ratios against baselines measured in the same
run.  Nothing here is asserted by tests; the figures are for humans and notes.

Baselines: the same manager with pluggy dispatch instead of the fast path, and the
raw engine doing the same work with torpor's codec (for ``lmdb``: a read transaction,
``get`` and the decode; a write transaction, ``put`` and the encode).  The managers
use a manual clock that does not move, so ``get`` measures the read path (a backend
with a touch resolution writes at most once per resolution per session).

``--urgent-close N`` and ``--cleanup-scaling`` add the sweep figures of
``torpor.cli._sweep_bench`` and check them against their limits: a figure that misses
its limit ends the command with status 1 and says which (``--no-check`` only reports).
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any, get_args

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import torpor
from torpor import codec
from torpor.cli._options import backend_options
from torpor.cli._sweep_bench import (
    CLEANUP_RATIO_LIMIT,
    URGENT_CLOSE_LIMIT_MS,
    CleanupFigure,
    SweepKind,
    cleanup_cost,
    scratch_storage,
    urgent_close_mid_sweep,
)
from torpor.sample import chat_session

Row = tuple[str, float, str]
SWEEPS: tuple[SweepKind, ...] = get_args(SweepKind)


def per_call_us(fn: Callable[[int], object], calls: int, repeats: int = 5) -> float:
    """Median over ``repeats`` runs of the mean cost of ``fn(i)``, in microseconds."""
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(calls):
            fn(i)
        runs.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(runs)


def _sizes(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    """Click callback: ``"10000,100000"`` -> ``(10000, 100000)``."""
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


@click.command()
@click.option("--backend", default="ets_like", show_default=True)
@click.option("--sessions", "count", default=10_000, show_default=True)
@click.option("--calls", default=20_000, show_default=True, help="Calls per timed run.")
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
    backend: str,
    count: int,
    calls: int,
    options: dict[str, str],
    urgent_sessions: int,
    cleanup_scaling: bool,
    cleanup_sizes: tuple[int, ...],
    check: bool,
) -> None:
    """Cost of get/create: fast path, pluggy dispatch and the raw engine; with
    --urgent-close and --cleanup-scaling, the sweep figures and their limits."""
    console = Console()
    payloads = [chat_session(random.Random(i)) for i in range(64)]
    rows = _manager_rows(backend, options, payloads, count, calls)
    rows += _raw_rows(backend, options, payloads, count, calls, rows)
    table = Table(title=f"torpor bench: {backend}, {count:,} sessions of ~3 KB")
    table.add_column("operation")
    table.add_column("µs per call", justify="right")
    table.add_column("ratio", justify="right")
    for name, cost, ratio in rows:
        table.add_row(name, f"{cost:.2f}", ratio)
    console.print(table)
    missed: list[str] = []
    if urgent_sessions:
        missed += _urgent_close(console, backend, options, urgent_sessions, payloads)
    if cleanup_scaling:
        missed += _cleanup_scaling(console, backend, options, cleanup_sizes, payloads)
    if missed and check:
        raise click.ClickException("; ".join(missed))
    for message in missed:
        console.print(f"[yellow]limit missed (not checked, --no-check):[/] {escape(message)}")


def _manager_rows(
    backend: str, options: dict[str, str], payloads: list[dict[str, Any]], count: int, calls: int
) -> list[Row]:
    quiet: dict[str, Any] = {"sweeper": False, "hibernate_after_ms": None}
    clock = torpor.ManualClock()
    with (
        scratch_storage(backend, options) as storage,
        scratch_storage(backend, options) as other_storage,
        torpor.open(backend, clock=clock, **quiet, **storage) as fast,
        torpor.open(backend, clock=clock, fast_path=False, **quiet, **other_storage) as dispatched,
    ):
        ids = [fast.create(payloads[i % 64]).id for i in range(count)]
        other = [dispatched.create(payloads[i % 64]).id for i in range(count)]
        get_fast = per_call_us(lambda i: fast.get(ids[i % count]), calls)
        get_hook = per_call_us(lambda i: dispatched.get(other[i % count]), calls)
        peek_fast = per_call_us(lambda i: fast.peek(ids[i % count]), calls)
        create_fast = per_call_us(lambda i: fast.create(payloads[i % 64]), max(calls // 10, 1))
    return [
        ("get, fast path", get_fast, "1.00x"),
        ("get, dispatched through pluggy", get_hook, f"{get_hook / get_fast:.2f}x of fast"),
        ("peek, fast path", peek_fast, f"{peek_fast / get_fast:.2f}x of get"),
        ("create, fast path", create_fast, ""),
    ]


def _raw_rows(
    backend: str,
    options: dict[str, str],
    payloads: list[dict[str, Any]],
    count: int,
    calls: int,
    rows: list[Row],
) -> list[Row]:
    if backend != "lmdb":
        return []
    import lmdb

    from torpor.plugins.lmdb._env import DURABILITY

    sync, metasync = DURABILITY[options.get("durability", "sync")]
    scratch = tempfile.TemporaryDirectory(prefix="torpor-raw-", ignore_cleanup_errors=True)
    env = lmdb.open(scratch.name, map_size=1 << 30, sync=sync, metasync=metasync)
    # The metadata torpor stores with each session (every field but the payload).
    meta = torpor.Record(
        id="", created_at=0, last_accessed=0, timeout_ms=None, version=1, hibernated=False,
        incarnation=1,
    )[:-2]  # fmt: skip
    blobs = [codec.encode_envelope(meta, codec.encode_data(p), compressed=False) for p in payloads]
    keys = [f"raw-{i}".encode() for i in range(count)]
    with env.begin(write=True) as txn:
        for i, key in enumerate(keys):
            txn.put(key, blobs[i % 64])

    def raw_get(i: int) -> object:
        with env.begin() as txn:
            blob = txn.get(keys[i % count])
        assert blob is not None
        _meta, payload, _compressed = codec.decode_envelope(blob)
        return codec.decode_data(payload)

    def raw_create(i: int) -> None:
        blob = codec.encode_envelope(meta, codec.encode_data(payloads[i % 64]), compressed=False)
        with env.begin(write=True) as txn:
            txn.put(f"new-{i}-{time.perf_counter_ns()}".encode(), blob)

    get_raw = per_call_us(raw_get, calls)
    create_raw = per_call_us(raw_create, max(calls // 10, 1))
    env.close()
    scratch.cleanup()
    get_fast = rows[0][1]
    create_fast = rows[3][1]
    return [
        ("get, raw lmdb + same codec", get_raw, f"torpor {get_fast / get_raw:.2f}x"),
        ("create, raw lmdb + same codec", create_raw, f"torpor {create_fast / create_raw:.2f}x"),
    ]


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
