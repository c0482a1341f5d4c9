"""``torpor bench --backend mnesia_like``: the raw sqlite3 floor and issue 11's goals.

What is checked is what the figures stand on, never how fast this machine is: the raw
engine stores and decodes what the backend would, on a connection configured exactly
as the backend's for the same storage mode; stores are copied whole; and a --quick
run reports issue 11's cases, ratios and goals, each goal read off its own figures.
"""

from __future__ import annotations

import json
import sqlite3
import stat
import statistics
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import torpor
from torpor.cli import cli
from torpor.cli.bench._goals import goals
from torpor.cli.bench._memory import MemoryFigure
from torpor.cli.bench._mnesia_like import RAW_LABEL, SqliteEngine, clone_store, scratch
from torpor.cli.bench._profiles import profile_for
from torpor.cli.bench._runner import Case, ratios
from torpor.cli.bench._settings import MIN_REPEATS, payloads
from torpor.plugins.mnesia_like import create_backend

PRAGMAS = ("journal_mode", "synchronous", "cache_size", "busy_timeout", "trusted_schema")
GOALS = {
    f"get hot within 1.5x of {RAW_LABEL} SELECT + decode": ("get hot", f"get, {RAW_LABEL}"),
    f"create within 1.5x of a {RAW_LABEL} BEGIN IMMEDIATE insert": ("create", f"put, {RAW_LABEL}"),
    f"update within 1.5x of a {RAW_LABEL} BEGIN IMMEDIATE read-modify-write": (
        "update",
        f"update, {RAW_LABEL}",
    ),
}


def _pragmas(conn: sqlite3.Connection) -> dict[str, object]:
    return {name: conn.execute(f"PRAGMA {name}").fetchone()[0] for name in PRAGMAS}


# -- the raw engine ------------------------------------------------------------------
@pytest.mark.parametrize("storage", ["disc", "disc_only"])
def test_the_raw_engine_stores_and_decodes_the_same_data(storage: str) -> None:
    data = payloads()
    factory = profile_for("mnesia_like").raw
    assert factory is SqliteEngine
    engine = SqliteEngine({"storage": storage}, 3, data)
    try:
        assert engine.get(4) == data[1]  # i picks a key modulo the count
        engine.update(1)
        assert engine.get(1) == {**data[1], "turn": 1}
        assert engine.get(2) == data[2]  # the update changed that key only
        # Every update writes a new value: SQLite would skip rewriting an equal one.
        wal = Path(engine._backend.db.target + "-wal")
        before = wal.stat().st_size
        engine.update(1)  # the same call again
        assert engine.get(1) == {**data[1], "turn": 2}
        assert wal.stat().st_size > before
        engine.put(5)
        engine.put(6)
        assert engine.spare() == 2
        engine.delete()
        assert engine.spare() == 1
        rows = engine._conn.execute("SELECT id, blob FROM raw ORDER BY rowid").fetchall()
        # Three keys shaped like torpor's ids, then the one put left; torpor's codec bytes.
        assert len(rows) == 4 and rows[-1][0] == b"new-1"
        assert all(key.startswith(b"session_") for key, _ in rows[:3])
        assert torpor.codec.decode_data(rows[-1][1]) == data[6 % len(data)]
    finally:
        engine.close()


@pytest.mark.parametrize("storage", ["disc", "disc_only"])
def test_the_raw_connection_is_configured_as_the_backends(storage: str, tmp_path: Path) -> None:
    engine = SqliteEngine({"storage": storage}, 1, payloads())
    try:
        raw = _pragmas(engine._conn)
    finally:
        engine.close()
    backend = create_backend(path=tmp_path / "s.sqlite3", storage=storage)
    with torpor.open(backend, sweeper=False) as mgr:
        mgr.create({"n": 1})
        mine = _pragmas(backend.db.conn())
    assert raw == mine
    # The two modes differ where issue 11 says they do: the comparison would catch a
    # raw engine left at SQLite's defaults.
    assert raw["journal_mode"] == "wal"
    assert raw["synchronous"] == {"disc": 1, "disc_only": 2}[storage]  # NORMAL, FULL


def test_ram_is_refused_before_anything_is_measured() -> None:
    with pytest.raises(click.ClickException, match="storage=disc or storage=disc_only"):
        SqliteEngine({"storage": "ram"}, 1, payloads())
    with pytest.raises(click.ClickException, match="storage=disc"), scratch({"storage": "ram"}):
        pass
    result = CliRunner().invoke(
        cli, ["bench", "--quick", "--backend", "mnesia_like", "--option", "storage=ram"]
    )
    assert result.exit_code == 1, result.output
    assert "Error: bench --backend mnesia_like measures storage=disc" in result.output
    assert "get hot" not in result.output


def test_a_bad_option_is_the_backends_typed_error() -> None:
    with pytest.raises(torpor.errors.ConfigError, match="storage must be one of"):
        SqliteEngine({"storage": "tape"}, 1, payloads())


# -- stores --------------------------------------------------------------------------
def test_a_store_is_copied_whole_into_a_file_of_its_own() -> None:
    clock = torpor.ManualClock()
    quiet = {"sweeper": False, "hibernate_after_ms": None}
    with scratch({}) as source, scratch({"storage": "disc_only"}) as target:
        assert source["path"] != target["path"] and target["storage"] == "disc_only"
        folder = Path(target["path"]).parent
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        with torpor.open("mnesia_like", clock=clock, **source, **quiet) as mgr:
            ids = {mgr.create({"i": i}).id for i in range(50)}
        clone_store(Path(source["path"]), Path(target["path"]))
        assert stat.S_IMODE(Path(target["path"]).stat().st_mode) == 0o600
        with torpor.open("mnesia_like", clock=clock, **target, **quiet) as copy:
            assert set(copy.ids()) == ids
            assert {s.data["i"] for s in copy.sessions()} == set(range(50))
    assert not folder.exists()  # deleted on exit


# -- goals ---------------------------------------------------------------------------
def test_issue_11_goals_are_read_off_the_raw_sqlite3_ratios_and_walk_peaks() -> None:
    samples = {
        "get hot": [3.0, 3.0, 3.0],
        f"get, {RAW_LABEL}": [2.0, 2.0, 2.0],  # 1.5x: met, at the limit
        "create": [4.0, 4.0, 4.0],
        f"put, {RAW_LABEL}": [2.0, 2.0, 2.0],  # 2x: missed
        "update": [1.0, 1.0, 1.0],
        f"update, {RAW_LABEL}": [1.0, 1.0, 1.0],
    }
    cases = [Case(name, baselines=(baseline,)) for name, baseline in GOALS.values()]
    memory = [
        MemoryFigure("ids() walk peak, 200,000 sessions", 130, "", 200_000),
        MemoryFigure("ids() walk peak, 20,000 sessions", 100, "", 20_000),
        MemoryFigure("sessions() walk peak, 20,000 sessions", 100, "", 20_000),
        MemoryFigure("sessions() walk peak, 200,000 sessions", 110, "", 200_000),
    ]
    found = {g.name: g for g in goals(ratios(cases, samples), memory, "", buffered_touches=True)}
    names = list(GOALS)
    assert found[names[0]].value == 1.5 and found[names[0]].met
    assert found[names[1]].value == 2.0 and not found[names[1]].met
    assert found[names[2]].met
    # The largest store's peak over the smallest's, whatever order they came in.
    ids = found["ids() walk peak, 200,000 sessions within 1.2x of 20,000 (flat)"]
    assert ids.value == pytest.approx(1.3) and not ids.met
    walked = found["sessions() walk peak, 200,000 sessions within 1.2x of 20,000 (flat)"]
    assert walked.value == pytest.approx(1.1) and walked.met
    # Without the raw sqlite3 baseline (another backend's run) none of them appear.
    others = {g.name for g in goals([], memory, "", buffered_touches=True)}
    assert not others & {*GOALS, ids.name, walked.name}


# -- the command ---------------------------------------------------------------------
def test_a_quick_run_reports_issue_11s_cases_and_goals(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    repeats = MIN_REPEATS
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "--quick",
            "--backend",
            "mnesia_like",
            "--repeats",
            str(repeats),
            "--json",
            str(out),
        ],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    (run,) = json.loads(out.read_text(encoding="utf-8"))["backends"]
    assert run["backend"] == "mnesia_like"
    samples = {case["name"]: case["samples_us"] for case in run["cases"]}
    raw = [f"{op}, {RAW_LABEL}" for op in ("get", "put", "update", "delete")]
    sizes = run["settings"]["sweep_sizes"]
    walks = [f"{w} walk, {size:,} sessions" for size in sizes for w in ("ids()", "sessions()")]
    expected = ["get hot", "create", "update", "delete", *raw, *walks]
    assert set(expected) <= set(samples), set(expected) - set(samples)
    for name, values in samples.items():
        assert len(values) == repeats and all(v > 0 for v in values), name
    pairs = {(r["case"], r["baseline"]): r for r in run["ratios"]}
    found = {g["name"]: g for g in run["goals"]}
    for goal, pair in GOALS.items():
        paired = [c / b for c, b in zip(samples[pair[0]], samples[pair[1]], strict=True)]
        assert pairs[pair]["median"] == pytest.approx(statistics.median(paired))
        assert found[goal]["value"] == pytest.approx(pairs[pair]["median"]), goal
        assert found[goal]["limit"] == 1.5 and not found[goal]["at_least"]
    peaks = {m["name"]: m["bytes"] for m in run["memory"]}
    small, large = sizes[0], sizes[-1]
    for walk in ("ids()", "sessions()"):
        goal = found[f"{walk} walk peak, {large:,} sessions within 1.2x of {small:,} (flat)"]
        ratio = (
            peaks[f"{walk} walk peak, {large:,} sessions"]
            / peaks[f"{walk} walk peak, {small:,} sessions"]
        )
        assert goal["value"] == pytest.approx(ratio) and goal["limit"] == 1.2
