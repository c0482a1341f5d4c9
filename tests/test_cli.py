"""The torpor command, run in-process through click's runner."""

from __future__ import annotations

import re

from click.testing import CliRunner

from torpor.cli import cli


def test_backends_lists_every_backend_with_its_capabilities() -> None:
    result = CliRunner().invoke(cli, ["backends"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "ets_like" in result.output and "native_hibernation" in result.output
    # lmdb needs a folder to open: the listing probes it on a throwaway one.
    assert re.search(r"lmdb .*shared_mailbox", result.output), result.output


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
    result = CliRunner().invoke(
        cli, ["bench", "--sessions", "100", "--calls", "300"], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    assert "get, fast path" in result.output and "dispatched through pluggy" in result.output
