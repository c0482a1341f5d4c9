"""Walk memory on lmdb with chat-like sessions (issue 9): ``ids()`` reads no record into
Python, and both walks hold one batch at a time.  Figures from tracemalloc (what the
walk allocates above what was allocated before it), never a time limit."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

import torpor
from torpor.sample import chat_session

SESSIONS = 3_000
KIB = 1024


def _peak(walk: Callable[[], Iterable[object]]) -> int:
    """Peak bytes allocated while walking, above what was allocated before."""
    tracemalloc.start()
    try:
        floor = tracemalloc.get_traced_memory()[0]
        count = sum(1 for _ in walk())
        peak = tracemalloc.get_traced_memory()[1] - floor
    finally:
        tracemalloc.stop()
    assert count == SESSIONS, f"walked {count} sessions, expected {SESSIONS}"
    return peak


@pytest.fixture(scope="module")
def chat_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[torpor.Manager]:
    path: Path = tmp_path_factory.mktemp("walk-memory")
    rng = random.Random(9)
    with torpor.open("lmdb", path=str(path), durability="nosync", sweeper=False) as mgr:
        for _ in range(SESSIONS):
            mgr.create(chat_session(rng), timeout_ms=None)
        yield mgr


def test_ids_peak_stays_under_256_kib_at_batch_1000(chat_store: torpor.Manager) -> None:
    assert chat_store.capabilities >= {torpor.Capability.NATIVE_ITERATION}
    peak = _peak(lambda: chat_store.ids(batch_size=1000))
    # A walk of whole records held ~10 MiB here: 1,000 records of ~3.3 KB, decoded.
    assert peak < 256 * KIB, f"ids() peaked at {peak / KIB:.0f} KiB"


def test_ids_memory_follows_the_batch(chat_store: torpor.Manager) -> None:
    small = _peak(lambda: chat_store.ids(batch_size=100))
    large = _peak(lambda: chat_store.ids(batch_size=1000))
    assert small * 4 < large, f"ids(): {small} B at batch 100, {large} B at batch 1000"


def test_sessions_memory_follows_the_batch(chat_store: torpor.Manager) -> None:
    small = _peak(lambda: chat_store.sessions(batch_size=100))
    large = _peak(lambda: chat_store.sessions(batch_size=1000))
    assert small * 4 < large, f"sessions(): {small} B at batch 100, {large} B at batch 1000"
