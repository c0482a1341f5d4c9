"""The performance goals of issues 9, 10 and 11, read off one run's ratios and memory
figures.  Issue 10's are redis's: they appear where the raw redis-py baselines ran;
issue 11's are mnesia_like's: where the raw sqlite3 baselines ran.

Reported, never enforced: a goal depends on the machine (a disk's fsync, a loaded
CPU), and the command's exit status is kept for the checked sweep limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torpor.cli.bench._memory import MemoryFigure
from torpor.cli.bench._mnesia_like import RAW_LABEL as SQLITE_LABEL
from torpor.cli.bench._redis import RAW_LABEL, RAW_WALK
from torpor.cli.bench._runner import RatioResult

__all__ = ["Goal", "goals"]

KIB = 1024


@dataclass(frozen=True)
class Goal:
    name: str
    value: float
    limit: float
    at_least: bool  # the value must reach the limit (else stay at or under it)
    unit: str  # "x" (a ratio) or "KiB"

    @property
    def met(self) -> bool:
        return self.value >= self.limit if self.at_least else self.value <= self.limit


def goals(
    ratios: Sequence[RatioResult],
    memory: Sequence[MemoryFigure],
    reference_label: str,
    *,
    buffered_touches: bool,
    versus_label: str = "",
) -> list[Goal]:
    """Every goal this run measured the figures of (others are left out).
    ``buffered_touches``: the backend has a touch resolution, so a cold read would
    commit were its touch not buffered (on ets_like every read writes in memory)."""
    by_pair = {(r.case, r.baseline): r.summary.median for r in ratios}
    by_name = {m.name: m.bytes for m in memory}
    found: list[Goal] = []
    cold = by_pair.get(("get cold: the read alone", "peek"))
    if cold is not None and buffered_touches:  # the goal of a read that would commit
        # What a request waits for; the flush that writes its touch later is reported
        # beside it (get cold, flush included), as the work it still costs.
        found.append(Goal("cold get (the read) within 2x of peek", cold, 2.0, False, "x"))
    for op in ("get hot", "create", "update"):
        whole = by_pair.get((f"{op}, {versus_label}", f"{op}, this torpor (worker)"))
        if versus_label and whole is not None:  # the whole old code path (_versus)
            found.append(Goal(f"{op} >= 1.5x faster than {versus_label}", whole, 1.5, True, "x"))
        if (old := by_pair.get((f"{op}, {reference_label}", op))) is not None:
            found.append(
                Goal(f"{op} >= 1.5x faster than the {reference_label}", old, 1.5, True, "x")
            )
    live, idle = by_name.get("live session data"), by_name.get("hibernated session")
    if live and idle is not None:
        name = "hibernated session <= 10% of its live data (tracemalloc)"
        found.append(Goal(name, idle / live, 0.10, False, "x"))
    walks = [m for m in memory if m.name.startswith("ids() walk peak") and m.size is not None]
    if walks:
        largest = max(walks, key=lambda m: m.size or 0)
        found.append(
            Goal(
                f"ids() walk peak, {largest.size:,} sessions, under 256 KiB",
                largest.bytes / KIB,
                256,
                False,
                "KiB",
            )
        )
    sweeps = [
        r for r in ratios if r.case.startswith("expiry sweep") and r.baseline.startswith("expiry")
    ]
    if sweeps:
        last = sweeps[-1]
        found.append(
            Goal(
                f"{last.case} within 1.5x of {last.baseline}, per session",
                last.summary.median,
                1.5,
                False,
                "x",
            )
        )
    return found + _redis_goals(by_pair, ratios) + _mnesia_goals(by_pair, memory)


def _redis_goals(
    by_pair: dict[tuple[str, str], float], ratios: Sequence[RatioResult]
) -> list[Goal]:
    """Issue 10's: a hot ``get`` against redis-py's ``GET`` and the same decode; the
    ids() walk and the expiry sweep, per session, against a raw pipelined walk at the
    largest size; a priority receive behind the backlog against an empty mailbox."""
    raw_get = by_pair.get(("get hot", f"get, {RAW_LABEL}"))
    if raw_get is None:
        return []
    found = [Goal(f"get hot within 1.2x of {RAW_LABEL} GET + decode", raw_get, 1.2, False, "x")]
    for case in ("ids() walk", "expiry sweep"):
        against = [r for r in ratios if r.case.startswith(case) and r.baseline.startswith(RAW_WALK)]
        if against:
            last = against[-1]  # the largest store: sizes run in ascending order
            name = f"{last.case} within 2x of {last.baseline}, per session"
            found.append(Goal(name, last.summary.median, 2.0, False, "x"))
    backlog = by_pair.get(("priority receive, backlog", "priority receive, empty"))
    if backlog is not None:
        name = "priority receive behind the backlog within 1.2x of an empty mailbox"
        found.append(Goal(name, backlog, 1.2, False, "x"))
    return found


def _mnesia_goals(
    by_pair: dict[tuple[str, str], float], memory: Sequence[MemoryFigure]
) -> list[Goal]:
    """Issue 11's: a hot ``get`` against raw sqlite3's ``SELECT`` and the same decode;
    ``create`` and ``update`` against a raw ``BEGIN IMMEDIATE`` insert and
    read-modify-write at the same ``synchronous`` level; and the walks' peak memory at
    the largest store against the smallest (issue 11 asks 200,000 against 20,000:
    ``--sweep-sizes 20000,200000``)."""
    raw_get = by_pair.get(("get hot", f"get, {SQLITE_LABEL}"))
    if raw_get is None:
        return []
    found = [
        Goal(f"get hot within 1.5x of {SQLITE_LABEL} SELECT + decode", raw_get, 1.5, False, "x")
    ]
    for op, raw, what in (
        ("create", "put", "BEGIN IMMEDIATE insert"),
        ("update", "update", "BEGIN IMMEDIATE read-modify-write"),
    ):
        ratio = by_pair.get((op, f"{raw}, {SQLITE_LABEL}"))
        if ratio is not None:
            found.append(
                Goal(f"{op} within 1.5x of a {SQLITE_LABEL} {what}", ratio, 1.5, False, "x")
            )
    for walk in ("ids()", "sessions()"):
        peaks = sorted(
            (m.size, m.bytes)
            for m in memory
            if m.name.startswith(f"{walk} walk peak") and m.size is not None
        )
        if len(peaks) >= 2 and peaks[0][1] > 0:
            (small, low), (large, high) = peaks[0], peaks[-1]
            name = f"{walk} walk peak, {large:,} sessions within 1.2x of {small:,} (flat)"
            found.append(Goal(name, high / low, 1.2, False, "x"))
    return found
