"""The ``torpor`` command.

Built on click (argument parsing, the de-facto standard, stable for a decade) and rich
(tables and progress bars).  Both are imported only when the command runs, so
``import torpor`` stays light.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from torpor.cli._backup import backup
from torpor.cli._bench import bench
from torpor.cli._conformance import conformance
from torpor.cli._demo import demo

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="torpor")
def cli() -> None:
    """torpor: pluggable session storage with hibernation."""


@cli.command()
def backends() -> None:
    """List the installed backends, their distribution, capabilities and storage
    options.  Reads each factory's static metadata: no backend is built, no storage is
    touched, no server is contacted."""
    import warnings

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from torpor._registry import describe_backends

    table = Table(title="torpor backends (entry-point group torpor.backends)")
    for column in ("name", "distribution", "capabilities, storage options / problem"):
        table.add_column(column)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        infos = describe_backends()
    for info in infos:
        if info.error is not None:
            # The full message (with its fix) is the warning printed once below.
            detail = "[red]not usable[/]: see the warning below"
        elif info.factory is not None:
            detail = escape(_metadata_of(info.factory, info.name))
        else:  # pragma: no cover - describe_backends gives a factory or an error
            detail = ""
        distribution = escape(f"{info.distribution} {info.version}")
        table.add_row(escape(info.name), distribution, detail)
    console = Console()
    console.print(table)
    # Messages are plain text: "pip install 'torpor[lmdb]'" must not be read as markup.
    for message in dict.fromkeys(str(w.message) for w in caught):
        console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


def _metadata_of(factory: Callable[..., Any], name: str) -> str:
    """What the factory declares (``torpor.describe_factory``); it is never called."""
    from torpor._registry import describe_factory
    from torpor.errors import ConfigError

    try:
        metadata = describe_factory(factory, name=name)
    except ConfigError as exc:  # shown in the table, never a crash of the listing
        return f"bad metadata: {exc}"
    if metadata.capabilities is None:
        claims = "not declared (the factory has no metadata)"
    else:
        claims = ", ".join(sorted(c.value for c in metadata.capabilities)) or "none (fallbacks)"
    lines = [f"capabilities: {claims}"]
    for option, by_value in metadata.variants.items():
        for value, variant in by_value.items():
            listed = ", ".join(sorted(c.value for c in variant)) or "none (fallbacks)"
            lines.append(f"with {option}={value}: {listed}")
    if metadata.storage_options:
        lines.append(f"storage options: {', '.join(sorted(metadata.storage_options))}")
    return "\n".join(lines)


cli.add_command(demo)
cli.add_command(bench)
cli.add_command(conformance)
cli.add_command(backup)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
