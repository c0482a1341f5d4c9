"""``--plot FILE.png``: per-operation cost and scaling with store size, one row per
backend.  matplotlib is an optional extra (``torpor[plot]``), imported only here and
only when a plot is asked for; the Agg backend draws without a display."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from torpor.cli.bench._run import BackendResult

__all__ = ["MISSING", "plot", "require_matplotlib"]

MISSING = '--plot needs matplotlib, which is not installed: pip install "torpor[plot]"'

_COLOURS = {"torpor": "#1f77b4", "raw engine": "#7f7f7f", "pluggy": "#ff7f0e"}
_OTHER = "#d62728"  # a reference code path (the 0.1 ets_like path)


def require_matplotlib() -> Any:
    """matplotlib's pyplot on the Agg backend; a one-line usage error if it is missing
    (checked before the benchmark runs, not after minutes of it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise click.UsageError(MISSING) from None
    return plt


def plot(path: Path, results: Sequence[BackendResult]) -> None:
    plt = require_matplotlib()
    rows = len(results)
    heights = [max(4.0, 0.32 * sum(c.size is None for c in r.cases)) for r in results]
    fig, axes = plt.subplots(
        rows,
        2,
        figsize=(15, sum(heights) + 1.2),
        gridspec_kw={"height_ratios": heights, "width_ratios": [1.35, 1]},
        squeeze=False,
    )
    for (costs, scaling), result in zip(axes, results, strict=True):
        _costs(costs, result)
        _scaling(scaling, result)
    s = results[0].settings
    fig.suptitle(
        f"torpor bench: median of {s.repeats} interleaved repetitions "
        f"({platform.python_implementation()} {platform.python_version()}, {platform.machine()})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _costs(ax: Any, result: BackendResult) -> None:
    """(a) One bar per operation, coloured by what ran it; the dot is the fastest
    repetition.  Log scale: a commit and a dict lookup differ by 1,000x."""
    cases = [c for c in result.cases if c.size is None][::-1]
    medians = [result.summary(c.name).median for c in cases]
    minima = [result.summary(c.name).min for c in cases]
    colours = [_COLOURS.get(c.kind, _OTHER) for c in cases]
    positions = range(len(cases))
    ax.barh(positions, medians, color=colours)
    ax.plot(minima, positions, "k.", markersize=4)
    ax.set_yticks(list(positions), [f"{c.name} (per {c.unit})" for c in cases], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(right=max(medians) * 2.5)  # room for the longest bar's label
    ax.set_xlabel("µs per unit (median; dot: min)")
    for y, value in zip(positions, medians, strict=True):
        ax.text(value, y, f" {value:,.1f}", va="center", fontsize=7)
    kinds = dict.fromkeys(c.kind for c in cases)
    handles = [_patch(_COLOURS.get(k, _OTHER), k) for k in kinds]
    # Below the axes, as on the right: inside, it would hide the longest bars.
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=4)
    ax.set_title(f"{result.backend}: cost per operation", fontsize=10)


def _patch(colour: str, label: str) -> Any:
    from matplotlib.patches import Patch

    return Patch(color=colour, label=label)


def _scaling(ax: Any, result: BackendResult) -> None:
    """(b) Per-session cost of the walks and of the expiry sweep at each store size
    (flat lines: linear), and the walks' peak memory on the right axis."""
    series: dict[str, list[tuple[int, float]]] = {}
    for case in result.cases:
        if case.size is not None:
            label = case.name.split(",")[0]
            series.setdefault(label, []).append((case.size, result.summary(case.name).median))
    for label, points in series.items():
        xs, ys = zip(*sorted(points), strict=True)
        ax.plot(xs, ys, "o-", label=f"{label}, µs per session")
    sizes = sorted({c.size for c in result.cases if c.size is not None})
    ax.set_xscale("log")
    ax.set_xticks(sizes, [f"{size:,}" for size in sizes])
    ax.minorticks_off()
    ax.set_xlabel("sessions in the store")
    ax.set_ylabel("µs per session (median)")
    ax.set_ylim(bottom=0)
    peaks: dict[str, list[tuple[int, float]]] = {}
    for figure in result.memory:
        if figure.size is not None:
            label = figure.name.split(",")[0]
            peaks.setdefault(label, []).append((figure.size, figure.bytes / 1024))
    lines, labels = ax.get_legend_handles_labels()
    if peaks:
        memory = ax.twinx()
        for label, points in peaks.items():
            xs, ys = zip(*sorted(points), strict=True)
            memory.plot(xs, ys, "s--", alpha=0.6, label=f"{label}, KiB (right)")
            last = max(x for x, _ in points)
            for x, y in points:
                inward = (-4, 4) if x == last else (4, 4)  # labels stay inside the axes
                memory.annotate(
                    f"{y:,.0f} KiB",
                    (x, y),
                    xytext=inward,
                    textcoords="offset points",
                    ha="right" if x == last else "left",
                    fontsize=7,
                    alpha=0.8,
                )
        memory.set_ylabel("walk peak memory, KiB (tracemalloc)")
        values = [y for points in peaks.values() for _, y in points]
        if min(values) > 0 and max(values) / min(values) > 20:
            memory.set_yscale("log")  # a batch of ids and a batch of sessions, both seen
        else:
            memory.set_ylim(bottom=0)
        more, more_labels = memory.get_legend_handles_labels()
        lines, labels = lines + more, labels + more_labels
    # Below the axes: inside, it would hide the lines it explains.
    ax.legend(lines, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    ax.set_title(f"{result.backend}: scaling with store size", fontsize=10)
