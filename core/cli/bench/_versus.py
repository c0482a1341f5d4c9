"""``torpor bench --versus PYTHON``: this torpor against another version, installed in
another environment, on the same workload, interleaved process by process.

The issue-9 goals for ets_like (get, create, update at least 1.5x faster than
before) compare with *code*, not just a backend: 0.1's manager copied data out where
today's decodes bytes, and returned eagerly decoded sessions from writes.  The 0.1
backend kept in the benchmark (``_legacy``) runs under today's manager, so it
measures only the stored form.  This block measures the whole path: each repetition
runs ``_versus_worker.py`` once under ``PYTHON`` and once under this interpreter (the
order alternating between repetitions, so that drift does not favour either), each
on a fresh store of the same sessions; the ratio of a repetition divides the two.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import click

from torpor.cli.bench._runner import Block, Case
from torpor.cli.bench._settings import Settings

__all__ = ["OPERATIONS", "versus_block"]

OPERATIONS = ("get hot", "create", "update")
_WORKER = Path(__file__).with_name("_versus_worker.py")
_TIMEOUT_S = 600


def _run(python: str, settings_path: str) -> dict[str, float]:
    try:
        done = subprocess.run(  # noqa: S603 (the user names the interpreter to run)
            [python, str(_WORKER), settings_path],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise click.ClickException(f"--versus: could not run {python}: {exc}") from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise click.ClickException(f"--versus: {python} failed:\n{tail}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def versus_block(
    backend: str, python: str, settings: Settings, stack: ExitStack
) -> tuple[Block, str]:
    """The block, and the label of the other version (run once to learn it)."""
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="torpor-versus-")))
    settings_path = folder / "settings.json"
    settings_path.write_text(
        json.dumps(
            {
                "backend": backend,
                "data": list(settings.data),
                "sessions": settings.sessions,
                "calls": settings.calls,
                "write_calls": settings.write_calls,
                "rounds": 3,
            }
        ),
        encoding="utf-8",
    )
    other = _run(python, str(settings_path))
    label = f"torpor {other.get('version', '?')} ({python})"
    cases: list[Case] = []
    for op in OPERATIONS:
        cases.append(Case(f"{op}, {label}", baselines=(f"{op}, this torpor (worker)",),
                          kind="other version", calls=settings.calls))  # fmt: skip
        cases.append(Case(f"{op}, this torpor (worker)", kind="torpor", calls=settings.calls))
    flips = [False]

    def run() -> Sequence[float]:
        order = [python, sys.executable]
        if flips[0]:
            order.reverse()
        flips[0] = not flips[0]
        found = {p: _run(p, str(settings_path)) for p in order}
        theirs, ours = found[python], found[sys.executable]
        values: list[float] = []
        for op in OPERATIONS:
            values += [theirs[op] / 1e6, ours[op] / 1e6]
        return values

    return Block(tuple(cases), run, warm_up=False), label
