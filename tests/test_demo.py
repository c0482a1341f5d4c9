"""``torpor demo``: memory per session measured by tracemalloc over a sample store, said
how, and figures that agree with each other and with a store traced in full."""

from __future__ import annotations

import gc
import random
import re
import sys
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import torpor
from torpor.cli import cli
from torpor.cli._memory import measure_sessions, resident_bytes
from torpor.sample import chat_session

# ets_like trains its zstd dictionary on its first 256 hibernations: half the sample
# is at least that, so the measured half is a big store's steady state.
SAMPLE = "1000"
NUMBER = r"(-?[\d,]+(?:\.\d+)?)"


def _run(*args: str) -> Result:
    command = ["demo", "--sessions", "300", "--backlog", "100", "--memory-sample", SAMPLE]
    result = CliRunner().invoke(cli, [*command, *args], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result


def _number(pattern: str, output: str) -> float:
    found = re.search(pattern.replace("#", NUMBER), output)
    assert found, (pattern, output)
    return float(found.group(1).replace(",", ""))


@pytest.fixture(scope="module")
def demo_output() -> str:
    """One default-backend run shared by the tests that only read its output."""
    return _run().output


def test_demo_prints_the_memory_of_a_session_and_how_it_was_measured(demo_output: str) -> None:
    out = demo_output
    assert "over a separate store of 1,000 sample sessions" in out, out
    assert "measured by: tracemalloc" in out, out
    live = _number(r"live: # B \(the session data as Python objects\)", out)
    active = _number(r"in the store, active: # B", out)
    hibernated = _number(r"in the store, hibernated: # B", out)
    share = _number(r"hibernated: [\d,]+ B = #% of live", out)
    smaller = _number(r"% of live \(#x smaller\)", out)
    assert 0 < hibernated < active and 0 < hibernated < live, out
    # Bytes are printed whole (±0.5 each), the share to 0.1% and the factor to 0.1x.
    assert share == pytest.approx(100 * hibernated / live, abs=0.05 + 0.01), out
    assert smaller == pytest.approx(live / hibernated, abs=0.05 + 0.01), out


def test_the_table_estimate_is_the_sample_figures_times_the_counts(demo_output: str) -> None:
    out = demo_output
    active = _number(r"in the store, active: # B", out)
    hibernated = _number(r"in the store, hibernated: # B", out)
    first = _number(r"its first 500 sessions: # KiB more", out) * 1024
    before = _number(r"before\s*│\s*300\s*│\s*300\s*│\s*0\s*│\s*# MiB", out)
    after = _number(r"after\s*│\s*300\s*│\s*30\s*│\s*270\s*│\s*# MiB", out)
    mib = 2**20
    # MiB to 0.1 (±0.05); each per-session byte figure ±0.5, times 300 sessions.
    slack = 0.05 + (300 * 0.5 + 512) / mib
    assert before == pytest.approx((first + 300 * active) / mib, abs=slack), out
    assert after == pytest.approx((first + 30 * active + 270 * hibernated) / mib, abs=slack)
    assert "store (est.): the sample's bytes per active and per hibernated session" in out
    assert "this run is not traced" in out


def test_an_idle_session_is_woken_intact(demo_output: str) -> None:
    assert re.search(r"get\(\) woke session_\S*\.\.\.: 12 turns intact", demo_output)


def test_the_walk_peak_and_rss_say_how_they_were_measured(demo_output: str) -> None:
    out = demo_output
    assert _number(r"peak extra memory # KiB \(tracemalloc\)", out) >= 0, out
    if resident_bytes() is not None:
        assert _number(r"process RSS \(the OS's figure\): # MiB before", out) > 0, out


def test_a_persistent_store_is_measured_by_its_own_figure_beside_the_heap() -> None:
    # No --option path: the demo gives lmdb's declared storage a temporary folder.
    out = _run("--backend", "lmdb", "--option", "durability=nosync").output
    assert "measured by: LMDB pages in use" in out and "(the backend's figure)" in out, out
    assert "live data by tracemalloc" in out, out
    assert re.search(r"in this process's heap: -?[\d,]+ B active", out), out
    live = _number(r"live: # B", out)
    hibernated = _number(r"in the store, hibernated: # B", out)
    share = _number(r"hibernated: [\d,]+ B = #% of live", out)
    assert share == pytest.approx(100 * hibernated / live, abs=0.06), out
    # The big run's store column is the backend's figure read now, not an estimate.
    assert "store: the backend's figure, LMDB pages in use" in out, out
    assert "store (est.)" not in out, out


def test_an_unknown_backend_is_an_error_message_not_a_traceback() -> None:
    result = CliRunner().invoke(cli, ["demo", "--backend", "no-such-backend"])
    assert result.exit_code == 1, result.output
    assert "no backend named 'no-such-backend'" in result.output, result.output


def test_a_sample_too_small_to_warm_a_store_up_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["demo", "--sessions", "10", "--memory-sample", "1"])
    assert result.exit_code == 2, result.output
    assert "--memory-sample" in result.output


@pytest.mark.unmeasured  # coverage's own allocations would be traced too
def test_per_session_figures_predict_a_store_traced_in_full() -> None:
    rng = random.Random(3)
    clock = torpor.ManualClock()
    with _store(clock) as mgr:
        memory = measure_sessions(mgr, clock, lambda: chat_session(rng), 1000, idle_ms=60_000)
    assert memory.storage is None and memory.store is memory.heap

    n = 1500  # another size than the sample's: the figures must carry over
    clock = torpor.ManualClock()
    with _store(clock) as mgr:
        tracemalloc.start()
        try:
            gc.collect()
            base = tracemalloc.get_traced_memory()[0]
            for _ in range(n):
                mgr.create(chat_session(rng))
            gc.collect()
            active = tracemalloc.get_traced_memory()[0] - base
            clock.advance(60_000)
            assert mgr.hibernate_idle() == n
            gc.collect()
            hibernated = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
    assert memory.heap.total(n, 0) == pytest.approx(active, rel=0.05)
    assert memory.heap.total(0, n) == pytest.approx(hibernated, rel=0.05)


def test_tracing_started_by_someone_else_is_left_on() -> None:
    rng = random.Random(4)
    clock = torpor.ManualClock()
    tracemalloc.start()
    try:
        with _store(clock) as mgr:
            memory = measure_sessions(mgr, clock, lambda: chat_session(rng), 4, idle_ms=60_000)
        assert tracemalloc.is_tracing()
    finally:
        tracemalloc.stop()
    assert memory.sessions == 4 and memory.live > 0


def test_a_sample_of_fewer_than_two_sessions_is_refused() -> None:
    clock = torpor.ManualClock()
    with _store(clock) as mgr, pytest.raises(ValueError, match="at least 2"):
        measure_sessions(mgr, clock, dict, 1, idle_ms=60_000)


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="RSS is read from /proc")
def test_resident_bytes_follow_what_the_process_touches() -> None:
    before = resident_bytes()
    block = b"x" * (64 << 20)  # written, so every page is resident
    after = resident_bytes()
    assert before is not None and after is not None
    assert after - before >= 32 << 20, (before, after)
    del block


@pytest.mark.skipif(sys.platform != "linux", reason="the /proc fallback is Linux-only")
def test_resident_bytes_is_none_without_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("/proc/self/statm")

    monkeypatch.setattr("builtins.open", missing)
    assert resident_bytes() is None


def _store(clock: torpor.ManualClock) -> torpor.Manager:
    return torpor.open(
        "ets_like",
        clock=clock,
        hibernate_after_ms=30_000,
        default_timeout_ms=24 * 3_600_000,
        sweeper=False,
    )
