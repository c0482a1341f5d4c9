"""The torpor command, run in-process through click's runner."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import torpor
from torpor.cli import cli


def test_backends_lists_every_backend_with_its_capabilities() -> None:
    result = CliRunner().invoke(cli, ["backends"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "ets_like" in result.output and "native_hibernation" in result.output
    # lmdb needs a folder to open, but the listing reads its factory's metadata.
    assert re.search(r"lmdb .*shared_mailbox", result.output), result.output
    assert re.search(r"storage options: path", result.output), result.output
    # mnesia_like's claims differ by storage mode: the listing shows both.
    assert re.search(r"with storage=ram: atomic_update", result.output), result.output


THIRD_PARTY = """
calls = []

def factory(**options):
    calls.append(options)
    raise ConnectionRefusedError("the listing must not build a backend or connect")

factory.capabilities = {"persistent", "native_iteration"}
factory.storage_options = {"path": "sessions"}

def bare(**options):
    calls.append(options)
    raise ConnectionRefusedError("the listing must not build a backend or connect")
"""


def test_backends_reads_static_metadata_and_builds_no_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fake_dists import make_dist

    monkeypatch.syspath_prepend(str(tmp_path))
    make_dist(
        tmp_path,
        "remote_dist",
        "tp_remote",
        THIRD_PARTY,
        {"torpor.backends": {"remote": "tp_remote:factory", "bare": "tp_remote:bare"}},
    )
    # No first-party backend may be built either.
    from torpor.plugins.ets_like import EtsLikeBackend

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("torpor backends built a backend")

    monkeypatch.setattr(EtsLikeBackend, "__init__", refuse)
    try:
        from torpor.plugins.lmdb import LmdbBackend
    except ImportError:  # pragma: no cover - lmdb is part of the test extra
        pass
    else:
        monkeypatch.setattr(LmdbBackend, "__init__", refuse)
    result = CliRunner().invoke(cli, ["backends"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert importlib.import_module("tp_remote").calls == []
    lines = result.output.splitlines()
    (remote,) = [i for i, line in enumerate(lines) if re.search(r"│ remote\s", line)]
    assert "capabilities: native_iteration, persistent" in lines[remote], result.output
    assert "storage options: path" in lines[remote + 1], result.output
    (bare,) = [line for line in lines if re.search(r"│ bare\s", line)]
    assert "capabilities: not declared (the factory has no metadata)" in bare, result.output
    assert re.search(r"ets_like .*capabilities: native_expiry", result.output), result.output


def test_conformance_refuses_a_fixed_storage_path_with_one_line() -> None:
    result = CliRunner().invoke(cli, ["conformance", "lmdb", "--option", "path=/tmp/x"])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        "torpor conformance: option 'path' names storage; each test needs its own: "
        'use --option "path={storage}/sessions"'
    ]


def test_conformance_of_an_unknown_backend_is_one_line() -> None:
    result = CliRunner().invoke(cli, ["conformance", "no-such-backend"])
    assert result.exit_code == 2, result.output
    (line,) = result.output.splitlines()
    assert line.startswith("torpor conformance: no backend named 'no-such-backend'"), line


def test_demo_prints_memory_before_and_after() -> None:
    result = CliRunner().invoke(
        cli, ["demo", "--sessions", "400", "--backlog", "1000"], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    assert re.search(r"hibernate_idle\(30 s\): 360 sessions", result.output)
    before = re.search(r"before\s*│\s*400\s*│\s*400\s*│\s*0\s*│\s*([\d.,]+) MiB", result.output)
    after = re.search(r"after\s*│\s*400\s*│\s*40\s*│\s*360\s*│\s*([\d.,]+) MiB", result.output)
    assert before and after, result.output
    assert float(after.group(1)) < float(before.group(1))
    assert "came out first" in result.output and "SessionCancelled" in result.output
    assert "walked 400 sessions (native iteration)" in result.output


def test_bench_reports_ratios() -> None:
    # Sizes given on the command line win over --quick's.
    result = CliRunner().invoke(
        cli, ["bench", "--quick", "--sessions", "100", "--calls", "300"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "100 sessions of ~3 KB" in result.output
    ratio = r"[\d.]+x \([\d.]+-[\d.]+\)"
    pluggy = rf"get hot, pluggy dispatch\s*│\s*call\s*│[\d,. ]+│[\d,. ]+│\s*{ratio}\s*│\s*get hot\s"
    assert re.search(pluggy, result.output), result.output


@pytest.mark.parametrize(
    "command",
    [["demo", "--sessions", "10", "--backlog", "10"], ["bench", "--sessions", "10"]],
    ids=["demo", "bench"],
)
@pytest.mark.parametrize("bad", ["durability", "=nosync"])
def test_option_without_key_equals_value_is_a_usage_error(command: list[str], bad: str) -> None:
    result = CliRunner().invoke(cli, [*command, "--option", "path=/tmp/x", "--option", bad])
    assert result.exit_code == 2, result.output  # click's usage error, not a traceback
    assert isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    assert repr(bad) in errors[0] and "KEY=VALUE" in errors[0] and "--option" in errors[0]
    assert "Traceback" not in result.output


def test_backend_options_are_parsed_once_for_every_command() -> None:
    from torpor.cli import _bench, _demo, _options

    for command in (_demo.demo, _bench.bench):
        (option,) = [p for p in command.params if p.name == "options"]
        assert option.callback is _options.parse_key_values
    assert _options.parse_key_values(None, None, ("a=1", "b=x=y", "c=")) == {
        "a": "1",
        "b": "x=y",
        "c": "",
    }


def test_backends_shows_a_missing_extra_once_with_its_pip_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The lmdb engine "is not installed": the next import of the backend fails.
    for name in [m for m in sys.modules if m.startswith("torpor.plugins.lmdb")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lmdb", None)  # type: ignore[arg-type]
    result = CliRunner().invoke(cli, ["backends"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    # The hint survives rich's markup ("[lmdb]" is not a style tag) ...
    assert "pip install 'torpor[lmdb]'" in result.output, result.output
    # ... and is shown once: the table points at it instead of repeating it.
    assert result.output.count("needs the module 'lmdb'") == 1, result.output
    assert result.output.count("torpor[lmdb]") == 1, result.output
    assert re.search(r"lmdb .*see the warning below", result.output), result.output
    assert re.search(r"ets_like .*native_hibernation", result.output), result.output


# The per-operation cases as small as they go: these tests are about the sweep checks.
SMALLEST_BENCH = ["--quick", "--sessions", "50", "--calls", "50", "--write-calls", "5"]
SMALLEST_BENCH += ["--sweep-sizes", "100,200", "--backlog", "100"]


@pytest.mark.parametrize("backend", ["ets_like", "lmdb"])
def test_bench_sweep_figures_are_reported(backend: str) -> None:
    # Small stores and --no-check: this checks the figures are measured and shown,
    # never how fast this machine is (the limits are the benchmark's business).
    args = ["bench", "--backend", backend, *SMALLEST_BENCH]
    args += ["--urgent-close", "3000", "--cleanup-scaling", "--cleanup-sizes", "200,2000"]
    result = CliRunner().invoke(cli, [*args, "--no-check"], terminal_width=200)
    assert result.exit_code == 0, result.output
    output = result.output
    assert "close(urgent=True) mid-sweep" in output
    for sweep in ("hibernation", "expiry"):
        row = re.search(rf"{sweep}\s*│\s*[\d.]+\s*│\s*([\d,]+)\s*│\s*([\d.]+)\s*│", output)
        assert row, output
        assert 0 < int(row.group(1).replace(",", "")) <= 3000
        assert float(row.group(2)) >= 0
    assert "cleanup_expired() per removed session" in output
    for size in ("200", "2,000"):
        assert re.search(rf"│\s*{size}\s*│\s*[\d.]+\s*│\s*[\d.]+\s*│\s*[\d.]+\s*│", output), output
    assert re.search(r"2,000 vs 200 expired: [\d.]+x \(limit 1.5x\)", output), output


def test_bench_check_fails_with_a_message_when_a_limit_is_missed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from torpor.cli import _bench

    monkeypatch.setattr(_bench, "URGENT_CLOSE_LIMIT_MS", 0.0)  # no close is that fast
    args = ["bench", *SMALLEST_BENCH, "--urgent-close", "3000"]
    result = CliRunner().invoke(cli, args, terminal_width=200)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (error,) = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert "close(urgent=True)" in error, result.output
    unchecked = CliRunner().invoke(cli, [*args, "--no-check"], terminal_width=200)
    assert unchecked.exit_code == 0 and "limit missed" in unchecked.output


def test_bench_cleanup_sizes_must_be_a_list_of_sizes() -> None:
    result = CliRunner().invoke(cli, ["bench", "--cleanup-sizes", "10000"])
    assert result.exit_code == 2 and "'10000'" in result.output


def test_model_examples_default_is_one_number_and_its_cost_is_documented() -> None:
    from torpor.cli._conformance import conformance
    from torpor.conformance import MODEL_EXAMPLES

    (option,) = [p for p in conformance.params if p.name == "examples"]
    assert option.default == MODEL_EXAMPLES == 25
    docs = (Path(__file__).resolve().parent.parent / "docs" / "plugin-authors.md").read_text()
    longer = docs[docs.index("### Longer runs") : docs.index("## 6. Going native")]
    assert f"By\ndefault it runs {MODEL_EXAMPLES} examples" in longer, longer
    # A measured figure for each count, on ets_like and lmdb; no bare suggestion.
    for count in ("25 (default)", "100", "500", "2000"):
        assert re.search(rf"^\| {re.escape(count)} \| [\d-]+ s \| [\d-]+ s \|", longer, re.M), count


def test_backup_copies_a_mnesia_like_store_that_opens_with_every_session(tmp_path: Path) -> None:
    source, target = tmp_path / "live.sqlite3", tmp_path / "copy.sqlite3"
    with torpor.open("mnesia_like", path=str(source), sweeper=False) as mgr:
        ids = sorted(mgr.create({"n": i}).id for i in range(5))
    result = CliRunner().invoke(cli, ["backup", "--option", f"path={source}", str(target)])
    assert result.exit_code == 0, result.output
    assert target.stat().st_mode & 0o777 == 0o600
    with torpor.open("mnesia_like", path=str(target), sweeper=False) as copy:
        assert sorted(copy.ids()) == ids
        assert sorted(s.data["n"] for s in copy.sessions()) == list(range(5))
    again = CliRunner().invoke(cli, ["backup", "--option", f"path={source}", str(target)])
    assert again.exit_code == 1 and "exists already" in again.output, again.output


def test_backup_of_a_backend_that_cannot_is_one_line() -> None:
    result = CliRunner().invoke(cli, ["backup", "--backend", "ets_like", "copy.db"])
    assert result.exit_code == 1
    assert "cannot make a backup" in result.output and "Traceback" not in result.output
