"""``torpor bench``: what it measures and reports, never how fast this machine is.

The command runs in --quick mode (small stores, short blocks); its figures are
checked for shape and consistency (every case, every repetition, ratios that are the
paired samples' ratios), and the statistics are checked on hand-made samples.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from redis.cluster import RedisCluster

import torpor
from tests.servers.cluster import Cluster
from tests.servers.standalone import Standalone
from torpor.cli import cli
from torpor.cli.bench._goals import goals
from torpor.cli.bench._memory import MemoryFigure
from torpor.cli.bench._runner import (
    Block,
    Case,
    Summary,
    paired_ratios,
    ratios,
    run_interleaved,
)
from torpor.cli.bench._settings import MIN_REPEATS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

EVERY_BACKEND = [
    "get hot",
    "get hot, pluggy dispatch",
    "peek",
    "get cold",
    "create",
    "update",
    "delete",
    "hibernate",
    "wake",
    "priority receive, backlog",
    "priority receive, empty",
]
RAW = {"ets_like": "dict of bytes", "lmdb": "raw lmdb"}


# -- the statistics, on hand-made samples -------------------------------------------
def test_ratios_are_taken_per_repetition_before_the_median() -> None:
    # A slow second repetition (30 vs 10) is slow for both: its ratio is 3, not the
    # 30 / 8 that unpaired medians or means would mix.
    case, base = [2.0, 30.0, 4.0], [1.0, 10.0, 8.0]
    per = paired_ratios(case, base)
    assert per == [2.0, 3.0, 0.5]
    assert Summary.of(per) == Summary(median=2.0, min=0.5, max=3.0, n=3)
    # The ratio of the medians would say 0.5: pairing is what the answer rests on.
    assert Summary.of(case).median / Summary.of(base).median == 0.5


def test_paired_ratios_refuse_unpaired_or_empty_baselines() -> None:
    with pytest.raises(ValueError, match="differ in number"):
        paired_ratios([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="not positive"):
        paired_ratios([1.0], [0.0])
    with pytest.raises(ValueError, match="no samples"):
        Summary.of([])


def test_ratios_follow_each_cases_baselines_and_skip_unmeasured_ones() -> None:
    cases = [
        Case("cold", baselines=("hot", "peek", "not measured")),
        Case("hot"),
        Case("peek"),
    ]
    samples = {"cold": [4.0, 6.0, 9.0], "hot": [2.0, 2.0, 3.0], "peek": [1.0, 3.0, 3.0]}
    found = {(r.case, r.baseline): r for r in ratios(cases, samples)}
    assert set(found) == {("cold", "hot"), ("cold", "peek")}
    assert found["cold", "hot"].per_repetition == (2.0, 3.0, 3.0)
    assert found["cold", "peek"].summary == Summary(median=3.0, min=2.0, max=4.0, n=3)


def test_blocks_run_interleaved_after_one_warm_up() -> None:
    order: list[str] = []

    def block(name: str, seconds: float, warm_up: bool = True) -> Block:
        def run() -> tuple[float]:
            order.append(name)
            return (seconds,)

        return Block((Case(name),), run, warm_up)

    blocks = [block("A", 1e-6), block("B", 2e-6), block("C", 3e-6, warm_up=False)]
    reported: list[int] = []
    samples = run_interleaved(blocks, 3, reported.append)
    assert order == ["A", "B"] + ["A", "B", "C"] * 3  # C is too slow to warm up
    assert samples == {"A": [1.0] * 3, "B": [2.0] * 3, "C": [3.0] * 3}  # in µs
    assert reported == [1, 2, 3]


def test_a_block_must_give_one_sample_per_case() -> None:
    bad = Block((Case("A"), Case("B")), lambda: (1.0,), warm_up=False)
    with pytest.raises(ValueError, match="1 samples for 2"):
        run_interleaved([bad], 1)
    twice = [Block((Case("A"),), lambda: (1.0,)), Block((Case("A"),), lambda: (1.0,))]
    with pytest.raises(ValueError, match="share a name"):
        run_interleaved(twice, 1)


def test_goals_are_read_off_ratios_and_memory() -> None:
    samples = {
        "get cold: the read alone": [3.0, 3.0, 3.0],
        "peek": [1.0, 1.0, 1.0],
        "create, 0.1 path": [2.0, 2.0, 2.0],
        "create": [1.0, 1.0, 1.0],
    }
    cases = [
        Case("get cold: the read alone", baselines=("peek",)),
        Case("create, 0.1 path", baselines=("create",)),
    ]
    memory = [
        MemoryFigure("live session data", 10_000, ""),
        MemoryFigure("hibernated session", 900, ""),
        MemoryFigure("ids() walk peak, 10 sessions", 300 * 1024, "", 10),
        MemoryFigure("ids() walk peak, 100 sessions", 100 * 1024, "", 100),
    ]
    measured = ratios(cases, samples)
    found = {g.name: g for g in goals(measured, memory, "0.1 path", buffered_touches=True)}
    assert not found["cold get (the read) within 2x of peek"].met  # 3x
    assert found["create >= 1.5x faster than the 0.1 path"].met  # 2x
    assert found["hibernated session <= 10% of its live data (tracemalloc)"].met  # 9%
    # The largest store's walk is the one judged.
    assert found["ids() walk peak, 100 sessions, under 256 KiB"].met
    assert "get hot >= 1.5x faster than the 0.1 path" not in found  # not measured
    # Where every read writes (ets_like, in memory), no cold read is a commit saved.
    unbuffered = goals(measured, memory, "0.1 path", buffered_touches=False)
    assert "cold get (the read) within 2x of peek" not in {g.name for g in unbuffered}


# -- the raw engines and the 0.1 path ------------------------------------------------
@pytest.mark.parametrize("backend", ["ets_like", "lmdb"])
def test_raw_engines_store_and_decode_the_same_data(backend: str) -> None:
    from torpor.cli.bench._profiles import profile_for
    from torpor.cli.bench._settings import payloads

    data = payloads()
    factory = profile_for(backend).raw
    assert factory is not None
    engine = factory({}, 3, data)
    try:
        _exercise(engine, data)
    finally:
        engine.close()


def _exercise(engine: Any, data: Sequence[dict[str, Any]]) -> None:
    """What every raw engine must do: read the stored data back (a key modulo the
    count), update it, put new keys and delete them."""
    assert engine.get(4) == data[1]  # i picks a key modulo the count
    engine.update(1)
    assert engine.get(1) == {**data[1], "turn": 1}
    engine.put(5)
    engine.put(6)
    assert engine.spare() == 2
    engine.delete()
    assert engine.spare() == 1


def test_the_01_path_keeps_live_dicts_for_active_sessions_and_bytes_for_idle_ones() -> None:
    from torpor.cli.bench._legacy import legacy_backend

    backend = legacy_backend()
    clock = torpor.ManualClock()
    with torpor.open(backend, clock=clock, sweeper=False, hibernate_after_ms=None) as mgr:
        sid = mgr.create({"n": 1}).id
        held = backend._entries[sid].record
        assert held.data == {"n": 1} and held.payload is None
        assert mgr.update(sid, lambda d: {**d, "n": 2}).data == {"n": 2}
        read = mgr.get(sid)
        assert read is not None
        read.data["n"] = 99  # a copy: the held dict is never the caller's
        assert backend._entries[sid].record.data == {"n": 2}
        clock.advance(2_000)
        assert mgr.hibernate_idle(1_000) == 1
        hibernated = backend._entries[sid].record
        assert hibernated.data is None and isinstance(hibernated.payload, bytes)
        woken = mgr.get(sid)
        assert woken is not None and woken.data == {"n": 2}
        assert backend._entries[sid].record.data == {"n": 2}  # live again
        assert [s.id for s in mgr.sessions()] == [sid] and len(mgr) == 1


# -- the command ---------------------------------------------------------------------
def _bench(*args: str) -> Any:
    result = CliRunner().invoke(cli, ["bench", "--quick", *args], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("backend", ["ets_like", "lmdb"])
def test_quick_run_reports_every_case_with_paired_ratios(backend: str, tmp_path: Path) -> None:
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    repeats = MIN_REPEATS + 1
    args = ["--backend", backend, "--repeats", str(repeats), "--json", str(out)]
    result = _bench(*args, "--plot", str(png))
    report = json.loads(out.read_text(encoding="utf-8"))
    env = report["environment"]
    for key in ("python", "platform", "cpu_count", "torpor", "git", "versions"):
        assert key in env, key
    assert env["torpor"] == torpor.__version__
    assert env["command"]["repeats"] == repeats
    (run,) = report["backends"]
    assert run["backend"] == backend
    samples = {case["name"]: case["samples_us"] for case in run["cases"]}
    raw = RAW[backend]
    expected = EVERY_BACKEND + [f"{op}, {raw}" for op in ("get", "put", "update", "delete")]
    for size in run["settings"]["sweep_sizes"]:
        expected += [
            f"ids() walk, {size:,} sessions",
            f"sessions() walk, {size:,} sessions",
            f"expiry sweep, {size:,} sessions",
        ]
    if backend == "ets_like":
        expected += ["get hot, 0.1 path", "create, 0.1 path", "update, 0.1 path"]
    else:  # lmdb buffers the touches of cold reads: their flush is shown on its own
        expected += ["get cold: its flush() share", "get cold: the read alone"]
    assert set(expected) <= set(samples), set(expected) - set(samples)
    if backend == "ets_like":  # every read writes its touch: nothing is buffered
        assert "get cold: its flush() share" not in samples
    for name, values in samples.items():
        assert len(values) == repeats, name
        assert all(v > 0 for v in values), name
    # Every ratio is its repetitions' ratios of paired samples, summarised.
    pairs = {(r["case"], r["baseline"]): r for r in run["ratios"]}
    assert ("get cold", "peek") in pairs and ("get hot", f"get, {raw}") in pairs
    assert ("priority receive, backlog", "priority receive, empty") in pairs
    first, last = run["settings"]["sweep_sizes"][0], run["settings"]["sweep_sizes"][-1]
    assert (f"expiry sweep, {last:,} sessions", f"expiry sweep, {first:,} sessions") in pairs
    for (case, baseline), ratio in pairs.items():
        paired = [c / b for c, b in zip(samples[case], samples[baseline], strict=True)]
        assert ratio["per_repetition"] == pytest.approx(paired)
        assert ratio["median"] == pytest.approx(statistics.median(paired))
        assert ratio["min"] == pytest.approx(min(paired))
    memory = {m["name"] for m in run["memory"]}
    assert f"ids() walk peak, {last:,} sessions" in memory
    assert f"sessions() walk peak, {last:,} sessions" in memory
    if backend == "ets_like":
        assert {"live session data", "hibernated session", "active session, 0.1 path"} <= memory
    # The table names each ratio's baseline; the plot is a PNG.
    assert "get cold" in result.output and "goals (issues 9-11)" in result.output
    assert png.read_bytes().startswith(PNG_SIGNATURE) and png.stat().st_size > 1000


def test_plot_without_matplotlib_is_one_line_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # type: ignore[arg-type]
    png = tmp_path / "bench.png"
    result = CliRunner().invoke(cli, ["bench", "--quick", "--plot", str(png)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert errors == [
        'Error: --plot needs matplotlib, which is not installed: pip install "torpor[plot]"'
    ], result.output
    assert "get hot" not in result.output  # refused before minutes of benchmarking
    assert not png.exists()


def test_fewer_repetitions_than_the_minimum_are_refused() -> None:
    result = CliRunner().invoke(cli, ["bench", "--repeats", str(MIN_REPEATS - 1)])
    assert result.exit_code == 2 and "--repeats" in result.output, result.output


def test_a_backend_without_a_profile_runs_the_manager_cases_alone() -> None:
    from torpor.cli.bench._profiles import Profile, profile_for

    assert profile_for("a-third-party-backend") == Profile()
    lmdb = profile_for("lmdb")
    assert lmdb.folder and lmdb.fast_fill == {"durability": "nosync"}
    assert lmdb.clone is not None and lmdb.raw is not None and not lmdb.heap


def test_versus_runs_both_versions_alternately_and_pairs_them(tmp_path: Path) -> None:
    # This interpreter stands in for the other version: both sides run the worker, each
    # repetition gives one sample per side, and the goals compare whole code paths.
    out = tmp_path / "versus.json"
    result = CliRunner().invoke(
        cli,
        ["bench", "--quick", "--versus", sys.executable, "--json", str(out)],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    (report,) = json.loads(out.read_text(encoding="utf-8"))["backends"]
    version = torpor.__version__
    label = f"torpor {version} ({sys.executable})"
    samples = {c["name"]: c["samples_us"] for c in report["cases"]}
    for op in ("get hot", "create", "update"):
        theirs, ours = samples[f"{op}, {label}"], samples[f"{op}, this torpor (worker)"]
        assert len(theirs) == len(ours) == MIN_REPEATS and min(theirs + ours) > 0
        ratio = next(
            r for r in report["ratios"]
            if r["case"] == f"{op}, {label}" and r["baseline"] == f"{op}, this torpor (worker)"
        )  # fmt: skip
        expected = statistics.median(a / b for a, b in zip(theirs, ours, strict=True))
        assert ratio["median"] == pytest.approx(expected)
        assert any(g["name"] == f"{op} >= 1.5x faster than {label}" for g in report["goals"])


def test_versus_with_a_python_that_fails_is_a_clear_error() -> None:
    result = CliRunner().invoke(cli, ["bench", "--quick", "--versus", "/nonexistent/python"])
    assert result.exit_code != 0 and "--versus: could not run /nonexistent/python" in result.output


# -- redis: a server of the tests' own ----------------------------------------------
def _keys_under(server: Standalone, namespace: str) -> list[bytes]:
    with redis.Redis.from_url(server.url) as client:
        return list(client.scan_iter(match=f"torpor:{{{namespace}*", count=1000))


def test_the_raw_redis_engine_stores_and_decodes_the_same_data(
    redis_standalone: Standalone,
) -> None:
    from torpor.cli.bench._redis import RedisEngine
    from torpor.cli.bench._settings import payloads

    data, namespace = payloads(), f"bench-raw-{secrets.token_hex(4)}"
    engine = RedisEngine({"url": redis_standalone.url, "namespace": namespace}, 3, data)
    try:
        _exercise(engine, data)
        assert _keys_under(redis_standalone, namespace)
    finally:
        engine.close()
    assert _keys_under(redis_standalone, namespace) == []  # its namespace is deleted


def test_redis_bench_reports_issue_10s_cases_and_goals_and_leaves_no_key(
    redis_standalone: Standalone, tmp_path: Path
) -> None:
    out, namespace = tmp_path / "bench.json", f"bench-{secrets.token_hex(4)}"
    sizes = (20, 60)
    _bench(
        "--backend", "redis",
        "--option", f"url={redis_standalone.url}",
        "--option", f"namespace={namespace}",
        "--sessions", "30", "--calls", "20", "--write-calls", "5", "--backlog", "50",
        "--sweep-sizes", ",".join(map(str, sizes)),
        "--json", str(out),
    )  # fmt: skip
    (run,) = json.loads(out.read_text(encoding="utf-8"))["backends"]
    samples = {case["name"]: case["samples_us"] for case in run["cases"]}
    expected = EVERY_BACKEND + [f"{op}, raw redis-py" for op in ("get", "put", "update", "delete")]
    # Touches of cold reads are buffered (touch_resolution_ms=1000 by default).
    expected += ["get cold: its flush() share", "get cold: the read alone"]
    for size in sizes:
        expected += [
            f"ids() walk, {size:,} sessions",
            f"sessions() walk, {size:,} sessions",
            f"expiry sweep, {size:,} sessions",
            f"raw pipelined walk, {size:,} sessions",
            f"raw pipelined sweep, {size:,} sessions",
        ]
    assert set(expected) <= set(samples), set(expected) - set(samples)
    assert all(len(v) == MIN_REPEATS and min(v) > 0 for v in samples.values())
    pairs = {(r["case"], r["baseline"]): r for r in run["ratios"]}
    big = f"{sizes[-1]:,} sessions"
    for pair in [
        ("get hot", "get, raw redis-py"),
        ("priority receive, backlog", "priority receive, empty"),
        (f"ids() walk, {big}", f"raw pipelined walk, {big}"),
        (f"sessions() walk, {big}", f"raw pipelined walk, {big}"),
        (f"expiry sweep, {big}", f"raw pipelined walk, {big}"),
        (f"expiry sweep, {big}", f"raw pipelined sweep, {big}"),
        (f"expiry sweep, {big}", f"expiry sweep, {sizes[0]:,} sessions"),
    ]:
        ratio = pairs[pair]
        paired = [c / b for c, b in zip(samples[pair[0]], samples[pair[1]], strict=True)]
        assert ratio["median"] == pytest.approx(statistics.median(paired)), pair
    goals = {g["name"]: g for g in run["goals"]}
    for name, pair in [
        ("get hot within 1.2x of raw redis-py GET + decode", ("get hot", "get, raw redis-py")),
        (
            f"ids() walk, {big} within 2x of raw pipelined walk, {big}, per session",
            (f"ids() walk, {big}", f"raw pipelined walk, {big}"),
        ),
        (
            f"expiry sweep, {big} within 2x of raw pipelined walk, {big}, per session",
            (f"expiry sweep, {big}", f"raw pipelined walk, {big}"),
        ),
        (
            "priority receive behind the backlog within 1.2x of an empty mailbox",
            ("priority receive, backlog", "priority receive, empty"),
        ),
    ]:
        assert goals[name]["value"] == pytest.approx(pairs[pair]["median"]), name
    # Issue 9's linearity goal still divides the sweep by the smaller store's.
    linear = f"expiry sweep, {big} within 1.5x of expiry sweep, {sizes[0]:,} sessions, per session"
    assert linear in goals
    # Every store lived in a namespace of its own under the one given, all deleted.
    assert _keys_under(redis_standalone, namespace) == []


def test_on_a_cluster_the_raw_walk_and_sweep_run_and_every_node_is_left_empty(
    redis_cluster: Cluster,
) -> None:
    # The raw keys share one hash tag (a Cluster pipeline refuses their MGET), while
    # torpor's store spreads over the buckets of every node: all of it is deleted.
    from contextlib import ExitStack

    from rich.console import Console

    from torpor.cli.bench._context import Context
    from torpor.cli.bench._redis import PROFILE, raw_sweep_name, raw_walk_name, scaling_raw
    from torpor.cli.bench._run import settings_for

    namespace = f"bench-cluster-{secrets.token_hex(4)}"
    options = {"url": redis_cluster.url, "cluster": "true", "namespace": namespace}
    settings = dataclasses.replace(settings_for(PROFILE, {}), walk_batch=7)  # several batches
    with RedisCluster.from_url(redis_cluster.url) as client:

        def left() -> list[bytes]:
            return list(client.scan_iter(match=f"torpor:{{{namespace}*", count=1000))

        with ExitStack() as stack:
            ctx = Context("redis", options, settings, PROFILE, stack, Console(quiet=True))
            block = scaling_raw(ctx, 30)
            assert [c.name for c in block.cases] == [raw_walk_name(30), raw_sweep_name(30)]
            # Each run refills, walks and sweeps; a record missed is a ClickException.
            assert all(seconds > 0 for seconds in block.run() + block.run())
            with torpor.open("redis", **ctx.storage(), sweeper=False) as mgr:
                for i in range(40):
                    mgr.create({"n": i})
            ranges = redis_cluster.slot_ranges
            slots = [client.keyslot(k) for k in left() if b":r:" in k]
            holding = {i for i, (a, b) in enumerate(ranges) for slot in slots if a <= slot <= b}
            assert holding == set(range(len(ranges)))  # records on every primary
        assert left() == []


def test_redis_bench_without_a_server_is_a_one_line_error() -> None:
    result = CliRunner().invoke(cli, ["bench", "--quick", "--backend", "redis"])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines() == [
        "Error: bench --backend redis needs a server: --option url=redis://HOST:PORT "
        "(or sentinels=HOST:PORT,... with service_name=NAME)"
    ]
