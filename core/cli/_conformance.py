"""``torpor conformance NAME``: run the conformance kit against an installed backend."""

from __future__ import annotations

import click


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("backend")
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Factory option; {storage} in a value becomes each test's own folder.",
)
@click.option("--area", "areas", multiple=True, help="Only these areas (repeatable).")
@click.option("--report", type=click.Path(dir_okay=False), help="Write the matrix as JSON.")
@click.option("--examples", default=25, show_default=True, help="State machine examples.")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def conformance(
    backend: str,
    options: tuple[str, ...],
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
    import pytest

    from torpor.conformance import SUITE_DIR

    args = [str(SUITE_DIR), "-p", "torpor.conformance.plugin", "-p", "no:cacheprovider"]
    args += ["--torpor-backend", backend, "--torpor-examples", str(examples)]
    for option in options:
        args += ["--torpor-option", option]
    for area in areas:
        args += ["--torpor-area", area]
    if report:
        args += ["--torpor-report", report]
    raise SystemExit(int(pytest.main([*args, *pytest_args])))
