"""Interleaved repetitions and the statistics drawn from them.

A machine's speed drifts while a benchmark runs (other processes, CPU frequency, the
page cache), so two cases timed one after the other can differ by more than the code
they measure.  Every case of one backend therefore runs once per repetition, in a
fixed order (A B C A B C ...), and a ratio is taken between the two samples of the
*same* repetition before any summary: drift that slows a whole repetition cancels out
of its ratio.  One discarded warm-up repetition comes first (imports, caches, the
allocator's first growth).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Block", "Case", "RatioResult", "Summary", "paired_ratios", "ratios", "run_interleaved"]


@dataclass(frozen=True)
class Case:
    """One figure of the benchmark: a sample is the mean cost of one ``unit`` (a call,
    a session, a message) over a block, in microseconds."""

    name: str
    unit: str = "call"
    # Cases this one is divided by, per repetition (the first is shown in the table).
    baselines: tuple[str, ...] = ()
    # What produced it: "torpor", "raw engine", "0.1 path", "pluggy" (for the plot).
    kind: str = "torpor"
    size: int | None = None  # store size, for the cases that scale with it
    calls: int = 0  # units per block: each sample is the mean over this many
    what: str = ""  # what a block does, for the JSON


@dataclass(frozen=True)
class Block:
    """One step of a repetition: ``run()`` does its untimed preparation, times its
    cases and returns one sample per case, in seconds per unit, in ``cases`` order."""

    cases: tuple[Case, ...]
    run: Callable[[], Sequence[float]]
    warm_up: bool = True  # False for blocks too slow to run an extra time


@dataclass(frozen=True)
class Summary:
    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            raise ValueError("no samples to summarise")
        return cls(statistics.median(values), min(values), max(values), len(values))


@dataclass(frozen=True)
class RatioResult:
    """``case`` over ``baseline``, one ratio per repetition, and their summary."""

    case: str
    baseline: str
    per_repetition: tuple[float, ...]
    summary: Summary


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """Repetition i of the numerator over repetition i of the denominator.

    Samples of different repetitions are never divided: the lists must be equally
    long (they come from the same run), and a denominator must be positive."""
    if len(numerator) != len(denominator):
        raise ValueError(
            f"paired samples differ in number ({len(numerator)} vs {len(denominator)})"
        )
    if any(d <= 0 for d in denominator):
        raise ValueError("a baseline sample is not positive: nothing can be divided by it")
    return [n / d for n, d in zip(numerator, denominator, strict=True)]


def ratios(cases: Sequence[Case], samples: Mapping[str, Sequence[float]]) -> list[RatioResult]:
    """Every case against each of its baselines that was measured in the same run."""
    results = []
    for case in cases:
        for baseline in case.baselines:
            if baseline not in samples:
                continue  # e.g. a raw engine this backend has no module for
            per = paired_ratios(samples[case.name], samples[baseline])
            results.append(RatioResult(case.name, baseline, tuple(per), Summary.of(per)))
    return results


def run_interleaved(
    blocks: Sequence[Block],
    repeats: int,
    progress: Callable[[int], None] = lambda repetition: None,
) -> dict[str, list[float]]:
    """Warm up once, then run every block once per repetition, in order; the samples
    of each case in microseconds, one per repetition."""
    for block in blocks:
        if block.warm_up:
            block.run()
    samples: dict[str, list[float]] = {c.name: [] for b in blocks for c in b.cases}
    if len(samples) != sum(len(b.cases) for b in blocks):
        raise ValueError("two cases share a name")
    for repetition in range(repeats):
        for block in blocks:
            values = block.run()
            if len(values) != len(block.cases):
                raise ValueError(f"a block gave {len(values)} samples for {len(block.cases)}")
            for case, seconds in zip(block.cases, values, strict=True):
                samples[case.name].append(seconds * 1e6)
        progress(repetition + 1)
    return samples
