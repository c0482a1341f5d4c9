"""Fail when the last test run's line or branch coverage is under its threshold.

coverage's own ``fail_under`` checks one figure that mixes lines and branches; torpor
holds each to its own floor.  Reads the data file the test run left (pytest-cov,
configured in pyproject.toml), writes ``coverage json`` beside it and checks its
totals.  Usage: ``python tools/coverage_gate.py [--lines 90] [--branches 85]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import coverage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the line and branch coverage floors.")
    parser.add_argument("--lines", type=float, default=90.0, metavar="PERCENT")
    parser.add_argument("--branches", type=float, default=85.0, metavar="PERCENT")
    args = parser.parse_args(argv)
    cov = coverage.Coverage()  # the [tool.coverage.*] settings of pyproject.toml
    data_file = Path(cov.config.data_file)
    if not data_file.exists():
        print(f"coverage gate: no coverage data at {data_file}: run the tests first")
        return 2
    cov.load()
    report = data_file.with_name("coverage.json")
    cov.json_report(outfile=str(report))
    totals = json.loads(report.read_text())["totals"]
    lines = _percent(totals["covered_lines"], totals["num_statements"])
    branches = _percent(totals["covered_branches"], totals["num_branches"])
    failed = lines < args.lines or branches < args.branches
    print(
        f"coverage gate: lines {lines:.1f}% (floor {args.lines:g}%), "
        f"branches {branches:.1f}% (floor {args.branches:g}%): {'FAILED' if failed else 'ok'}"
    )
    return 1 if failed else 0


def _percent(covered: int, total: int) -> float:
    return 100.0 * covered / total if total else 100.0


if __name__ == "__main__":
    sys.exit(main())
