"""How much one ``torpor bench`` run does: sizes, block lengths, repetitions."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from torpor.sample import chat_session

__all__ = ["MIN_REPEATS", "QUICK", "Settings", "payloads"]

MIN_REPEATS = 5
"""Fewer repetitions give a median that one disturbed repetition can move."""


def payloads() -> tuple[dict[str, Any], ...]:
    """64 chat-like sessions of ~3 KB (the same ones on every run: seeded)."""
    return tuple(chat_session(random.Random(i)) for i in range(64))


@dataclass(frozen=True)
class Settings:
    sessions: int  # in each store that reads, updates and deletes work on
    calls: int  # calls per block of a read case
    write_calls: int  # calls per block of a case that writes (commits, on a disk)
    repeats: int
    sweep_sizes: tuple[int, ...]
    backlog: int  # normal messages queued ahead of the priority ones
    walk_batch: int = 1000
    memory_sessions: int = 1000  # sessions in the tracemalloc pass of per-session memory
    data: tuple[dict[str, Any], ...] = field(default_factory=payloads, repr=False)


QUICK = {
    "sessions": 200,
    "calls": 200,
    "write_calls": 20,
    "repeats": MIN_REPEATS,
    "sweep_sizes": (300, 1500),
    "backlog": 2000,
    "memory_sessions": 600,  # the first half trains the zstd dictionary
}
"""``--quick``: every case, a few seconds per backend; figures too noisy to quote."""
