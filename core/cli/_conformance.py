"""``torpor conformance NAME``: run the conformance kit against an installed backend."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from torpor.cli._options import parse_key_values
from torpor.conformance._kit import MODEL_EXAMPLES  # no pytest: only the kit's helpers


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("backend")
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    callback=parse_key_values,
    help="Factory option (repeatable); {storage} in a value becomes each test's own "
    "folder.  Options the backend declares as storage need none.",
)
@click.option("--area", "areas", multiple=True, help="Only these areas (repeatable).")
@click.option("--report", type=click.Path(dir_okay=False), help="Write the matrix as JSON.")
@click.option(
    "--examples",
    default=MODEL_EXAMPLES,
    show_default=True,
    type=click.IntRange(min=1),
    help="State machine examples (25: a few seconds; see docs/plugin-authors.md).",
)
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def conformance(
    backend: str,
    options: dict[str, str],
    areas: tuple[str, ...],
    report: str | None,
    examples: int,
    pytest_args: tuple[str, ...],
) -> None:
    """Prove that BACKEND (an entry-point name or module:factory) keeps torpor's
    semantics.  Prints a capability matrix; exits non-zero if any area fails.
    Extra arguments after -- go to pytest."""
    import importlib.util

    # Only look: importing them here would stop pytest from rewriting their asserts.
    if not all(importlib.util.find_spec(m) for m in ("pytest", "hypothesis")):
        raise click.ClickException(
            "the conformance kit needs pytest and hypothesis: pip install 'torpor[conformance]'"
        )
    _check_target(backend, options)
    import pytest

    from torpor.conformance import SUITE_DIR

    args = [str(SUITE_DIR), "-p", "torpor.conformance.plugin", "-p", "no:cacheprovider"]
    args += ["--torpor-backend", backend, "--torpor-examples", str(examples)]
    for key, value in options.items():
        args += ["--torpor-option", f"{key}={value}"]
    for area in areas:
        args += ["--torpor-area", area]
    if report:
        args += ["--torpor-report", report]
    raise SystemExit(int(pytest.main([*args, *pytest_args])))


def _check_target(backend: str, options: dict[str, str]) -> None:
    """Refuse, before any test runs, with one line and exit status 2: a backend that
    cannot be loaded (or whose metadata is malformed), and a fixed value for an option
    the backend declares as storage (every test would share one store)."""
    import os

    from torpor.conformance._target import Target, fixed_storage_message
    from torpor.errors import TorporError

    if ":" in backend and os.getcwd() not in sys.path and "" not in sys.path:
        # "module:factory" is found from the current folder, as with python -m pytest.
        sys.path.insert(0, os.getcwd())
    try:
        fixed = Target(backend=backend, options=options).fixed_storage()
    except TorporError as exc:
        _usage_line(str(exc))
    if fixed:
        _usage_line(fixed_storage_message(fixed, "--option"))


def _usage_line(message: str) -> NoReturn:
    click.echo(f"torpor conformance: {message}", err=True)
    sys.exit(2)
