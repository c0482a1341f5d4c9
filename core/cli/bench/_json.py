"""``--json FILE``: every sample of a run and the environment it ran in, so a figure
can be checked, recomputed or compared with another machine's."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torpor
from torpor.cli.bench._run import BackendResult

__all__ = ["environment", "to_json", "write_json"]

_VERSIONS = ("msgspec", "zstandard", "pluggy", "lmdb", "matplotlib")


def _git_revision() -> str | None:
    """The checkout's commit (with ``-dirty`` if it has changes), or None when torpor
    is not installed from one."""
    folder = Path(torpor.__file__).resolve().parent
    try:
        # A fixed argument list, no shell: git itself is looked up on PATH.
        out = subprocess.run(  # noqa: S603
            ["git", "-C", str(folder), "describe", "--always", "--dirty", "--abbrev=40"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment(command: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": sys.version,
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torpor": torpor.__version__,
        "git": _git_revision(),
        "versions": {name: _version(name) for name in _VERSIONS},
        "command": dict(command),
    }


def _result(result: BackendResult) -> dict[str, Any]:
    settings = dataclasses.asdict(result.settings)
    del settings["data"]  # the payloads are chat_session(Random(0..63)): not worth a copy
    cases = []
    for case in result.cases:
        summary = result.summary(case.name)
        cases.append(
            {
                **dataclasses.asdict(case),
                "samples_us": result.samples[case.name],
                "median_us": summary.median,
                "min_us": summary.min,
                "max_us": summary.max,
            }
        )
    return {
        "backend": result.backend,
        "options": dict(result.options),
        "settings": settings,
        "cases": cases,
        "ratios": [
            {
                "case": r.case,
                "baseline": r.baseline,
                "per_repetition": list(r.per_repetition),
                "median": r.summary.median,
                "min": r.summary.min,
                "max": r.summary.max,
            }
            for r in result.ratios
        ],
        "memory": [dataclasses.asdict(m) for m in result.memory],
        "goals": [{**dataclasses.asdict(g), "met": g.met} for g in result.goals],
    }


def to_json(results: Sequence[BackendResult], command: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "format": 1,
        "environment": environment(command),
        "backends": [_result(r) for r in results],
    }


def write_json(path: Path, results: Sequence[BackendResult], command: Mapping[str, Any]) -> None:
    text = json.dumps(to_json(results, command), indent=2, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")
