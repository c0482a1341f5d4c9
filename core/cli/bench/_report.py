"""The tables a person reads: per-case costs with their ratios, memory, and goals."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from torpor.cli.bench._run import BackendResult
from torpor.cli.bench._runner import RatioResult

__all__ = ["print_result", "ratio_text", "title"]


def title(result: BackendResult) -> str:
    s = result.settings
    options = ", ".join(f"{k}={v}" for k, v in sorted(result.options.items()))
    return (
        f"torpor bench: {result.backend}{f' ({options})' if options else ''}, "
        f"{s.repeats} interleaved repetitions, {s.sessions:,} sessions of ~3 KB"
    )


def ratio_text(ratio: RatioResult) -> str:
    r = ratio.summary
    return f"{r.median:.2f}x ({r.min:.2f}-{r.max:.2f})"


def _us(value: float) -> str:
    return f"{value:,.2f}" if value < 1000 else f"{value:,.0f}"


def print_result(console: Console, result: BackendResult) -> None:
    table = Table(
        title=escape(title(result)),
        caption="median and min over repetitions; each ratio is the median (min-max) of "
        "the ratios of paired samples, one per repetition",
    )
    for column, justify in [
        ("case", "left"),
        ("µs per", "left"),
        ("median µs", "right"),
        ("min µs", "right"),
        ("ratio", "right"),
        ("of", "left"),
    ]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    by_case: dict[str, list[RatioResult]] = {}
    for ratio in result.ratios:
        by_case.setdefault(ratio.case, []).append(ratio)
    for case in result.cases:
        summary = result.summary(case.name)
        found = by_case.get(case.name, [])
        table.add_row(
            escape(case.name),
            case.unit,
            _us(summary.median),
            _us(summary.min),
            "\n".join(ratio_text(r) for r in found),
            "\n".join(escape(r.baseline) for r in found),
        )
    console.print(table)
    if result.memory:
        memory = Table(title=f"memory: {result.backend} (tracemalloc, untimed passes)")
        for column in ("figure", "bytes", "how"):
            memory.add_column(column, justify="right" if column == "bytes" else "left")
        for figure in result.memory:
            memory.add_row(escape(figure.name), f"{figure.bytes:,.0f}", escape(figure.what))
        console.print(memory)
    if result.goals:
        goals = Table(title=f"goals (issues 9-11): {result.backend} (reported, not enforced)")
        for column in ("goal", "measured", "limit", "verdict"):
            goals.add_column(column, justify="left" if column == "goal" else "right")
        for goal in result.goals:
            fmt = ".3g" if goal.unit == "x" else ",.0f"  # 0.101 must not read as 0.10
            goals.add_row(
                escape(goal.name),
                f"{goal.value:{fmt}} {goal.unit}",
                f"{'>=' if goal.at_least else '<='} {goal.limit:{fmt}} {goal.unit}",
                "[green]met[/]" if goal.met else "[red]missed[/]",
            )
        console.print(goals)
