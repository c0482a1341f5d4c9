"""The ``torpor`` command.

Built on click (argument parsing, the de-facto standard, stable for a decade) and rich
(tables and progress bars).  Both are imported only when the command runs, so
``import torpor`` stays light.
"""

from __future__ import annotations

import sys

import click

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
    """List the installed backends, their distribution and capabilities."""
    import warnings

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    import torpor
    from torpor._registry import describe_backends

    table = Table(title="torpor backends (entry-point group torpor.backends)")
    for column in ("name", "distribution", "capabilities / problem"):
        table.add_column(column)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        infos = describe_backends()
    for info in infos:
        if info.error is not None:
            # The full message (with its fix) is the warning printed once below.
            detail = "[red]not usable[/]: see the warning below"
        elif info.factory is not None:
            detail = escape(_capabilities_of(info.factory, torpor))
        else:  # pragma: no cover - describe_backends gives a factory or an error
            detail = ""
        distribution = escape(f"{info.distribution} {info.version}")
        table.add_row(escape(info.name), distribution, detail)
    console = Console()
    console.print(table)
    # Messages are plain text: "pip install 'torpor[lmdb]'" must not be read as markup.
    for message in dict.fromkeys(str(w.message) for w in caught):
        console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


def _capabilities_of(factory: object, torpor: object) -> str:
    """Open the backend briefly to read its claims.  Backends that need a folder get a
    throwaway one (``path`` is the conventional option for it)."""
    import tempfile

    from torpor._binding import Binding, make_plugin_manager
    from torpor.errors import ConfigError

    with tempfile.TemporaryDirectory(prefix="torpor-backends-") as scratch:
        try:
            try:
                backend = factory()  # type: ignore[operator]
            except ConfigError as exc:
                if "'path'" not in str(exc):
                    raise
                backend = factory(path=f"{scratch}/probe")  # type: ignore[operator]
            binding = Binding(make_plugin_manager(backend, ()), backend, fast_path=True)
            claims = ", ".join(sorted(c.value for c in binding.capabilities))
            binding.call_all("torpor_close", urgent=False)
        except Exception as exc:  # shown in the table, never a crash of the listing
            return f"(cannot open without options: {type(exc).__name__}: {exc})"
    return claims or "none (fallbacks)"


cli.add_command(demo)
cli.add_command(bench)
cli.add_command(conformance)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
