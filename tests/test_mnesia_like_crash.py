"""mnesia_like under SIGKILL (issue 11): a writer killed at random points, 20 times per
storage mode, loses no acknowledged write, and the file always opens intact.

The writer (``tests/mnesia_crash_writer.py``) says what it is about to write, then
``ok`` once the call returned.  After each kill a new manager opens the file and the
store must hold exactly the acknowledged state, or that state plus the whole of the
one write under way when the kill landed (a transaction over two sessions included):
never a part of it.  What the store holds then is the next round's starting state.

``disc_only`` (``synchronous=FULL``) promises this even across an OS crash; ``disc``
(``synchronous=NORMAL``) across the death of a process, which is what SIGKILL tests.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import torpor

ROOT = Path(__file__).resolve().parent.parent
KILLS = 20
FIRST_ACK_WAIT_S = 30.0  # a bound on the writer's start, never a threshold measured
MAX_DELAY_S = 0.15


def _lines(stream: object, into: queue.Queue[str | None]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line)
    into.put(None)


def _apply(state: dict[str, int], op: list[str]) -> dict[str, int]:
    """``state`` after the writer's operation ``op`` (as it printed it)."""
    after = dict(state)
    if op[0] == "create":
        after[op[1]] = 0
    else:  # update: one session, transfer: two, each + 1
        for sid in op[1:]:
            after[sid] += 1
    return after


def _run_writer(path: Path, storage: str, round_no: int, delay: float) -> Iterator[str]:
    """Start a writer, wait (bounded) for its first acknowledged write, let it run
    ``delay`` seconds more, SIGKILL it; every line it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.mnesia_crash_writer", str(path), storage, str(round_no)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        while "ok\n" not in seen:
            try:
                line = lines.get(timeout=FIRST_ACK_WAIT_S)
            except queue.Empty:
                pytest.fail(f"round {round_no}: no write acknowledged in {FIRST_ACK_WAIT_S} s")
            if line is None:
                pytest.fail(f"round {round_no}: the writer died: {proc.stderr.read()}")
            seen.append(line)
        threading.Event().wait(delay)  # the kill's random point, not a threshold
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # wherever it is: maybe mid-commit
        proc.wait(timeout=FIRST_ACK_WAIT_S)
        reader.join(timeout=FIRST_ACK_WAIT_S)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    while (line := lines.get_nowait()) is not None:
        seen.append(line)
    return iter(seen)


def _replay(
    state: dict[str, int], lines: Iterator[str]
) -> tuple[dict[str, int], list[str] | None, int]:
    """The acknowledged state, the operation under way at the kill (None if none),
    and how many writes were acknowledged."""
    pending: list[str] | None = None
    acked = 0
    for raw in lines:
        if not raw.endswith("\n"):
            break  # a line cut by the kill: never acknowledged
        words = raw.split()
        if words[0] == "do":
            assert pending is None, f"two writes under way at once: {raw!r}"
            pending = words[1:]
        elif words[0] == "ok":
            assert pending is not None, "an ok without a write"
            state, pending = _apply(state, pending), None
            acked += 1
    return state, pending, acked


def _check_store(path: Path, storage: str, round_no: int) -> dict[str, int]:
    """Open the store as a new manager would after the crash; its state, checked."""
    # SQLite's own verdict on every page and index, read outside torpor.
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], round_no
    finally:
        conn.close()
    options = {"sweeper": False, "hibernate_after_ms": None}
    with torpor.open("mnesia_like", path=path, storage=storage, **options) as mgr:
        stored = {str(s.id): int(s.data["n"]) for s in mgr.sessions()}
        ids = set(mgr.ids())
        stats = mgr.stats()
        assert ids == set(stored), f"round {round_no}: ids() and sessions() disagree"
        assert len(mgr) == len(stored)
        assert (stats.sessions, stats.stored, stats.damaged) == (len(stored), len(stored), 0)
    return stored


@pytest.mark.parametrize("storage", ["disc_only", "disc"])
def test_sigkill_at_random_points_loses_no_acknowledged_write(storage: str, tmp_path: Path) -> None:
    path = tmp_path / "crash.sqlite3"
    rng = random.Random(f"issue 11 {storage}")
    state: dict[str, int] = {}
    acknowledged = interrupted = 0
    for round_no in range(KILLS):
        lines = _run_writer(path, storage, round_no, rng.uniform(0.0, MAX_DELAY_S))
        acked, pending, count = _replay(state, lines)
        acknowledged += count
        interrupted += pending is not None
        stored = _check_store(path, storage, round_no)
        if pending is not None and stored != acked:
            # The write under way committed before the kill: all of it, or nothing.
            assert stored == _apply(acked, pending), (
                f"round {round_no}: the store is neither the acknowledged state nor that "
                f"state plus the whole of {pending}"
            )
        else:
            lost = {sid: n for sid, n in acked.items() if stored.get(sid) != n}
            assert stored == acked, f"round {round_no}: acknowledged writes lost: {lost}"
        state = stored
    assert acknowledged >= 2 * KILLS  # every round wrote, and was acknowledged
    assert len(state) >= 2
    # The writer spends nearly all its time inside writes: most kills land in one.
    assert interrupted >= KILLS // 2, f"only {interrupted} of {KILLS} kills interrupted a write"
