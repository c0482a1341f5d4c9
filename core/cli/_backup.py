"""``torpor backup``: a consistent copy of a store, for backends that can make one.

A backend offers it with a ``backup(path)`` method (``mnesia_like``: SQLite's
``VACUUM INTO``, taken while other processes go on reading and writing).  The command
builds the backend from its options, as ``torpor.open`` would, copies, and closes it;
no manager is opened, so no sweeper or flush runs against the store.
"""

from __future__ import annotations

from pathlib import Path

import click

from torpor.cli._options import backend_options

__all__ = ["backup"]


@click.command()
@click.option("--backend", "name", default="mnesia_like", show_default=True,
              help="Registered backend whose store to copy.")  # fmt: skip
@backend_options
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path))
def backup(name: str, options: dict[str, str], target: Path) -> None:
    """Copy the store named by the backend's options to TARGET (a new file, 0600),
    e.g. ``torpor backup --option path=sessions.db sessions-backup.db``."""
    from torpor import load_backend_factory
    from torpor.errors import TorporError

    try:
        backend = load_backend_factory(name)(**options)
    except TorporError as exc:
        raise click.ClickException(str(exc)) from None
    copy = getattr(backend, "backup", None)
    try:
        if not callable(copy):
            raise click.ClickException(
                f"backend {name!r} cannot make a backup (it has no backup(path) method); "
                "mnesia_like can"
            )
        copy(target)
    except TorporError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        close = getattr(backend, "torpor_close", None)
        if callable(close):
            close(False)
    click.echo(f"backed up to {target}")
