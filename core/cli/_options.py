"""Options shared by the commands that open a backend (``demo``, ``bench``)."""

from __future__ import annotations

import click

__all__ = ["backend_options", "parse_key_values"]


def parse_key_values(
    ctx: click.Context | None, param: click.Parameter | None, values: tuple[str, ...]
) -> dict[str, str]:
    """Click callback: ``("path=/tmp/x", "durability=nosync")`` -> a dict.

    A value without ``=`` (or with nothing before it) is a usage error (exit code 2)
    naming the bad value and the expected form, never a traceback.  A key given twice
    keeps its last value, as on most command lines.
    """
    options: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(
                f"{value!r} is not KEY=VALUE (e.g. --option path=/tmp/sessions)",
                ctx=ctx,
                param=param,
            )
        options[key.strip()] = rest
    return options


# The repeatable ``--option KEY=VALUE``, handed to the command as ``options``, a
# ``dict[str, str]`` (click builds a fresh parameter for each command it decorates).
backend_options = click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    callback=parse_key_values,
    help="Backend option (repeatable).",
)
