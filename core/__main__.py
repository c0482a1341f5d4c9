"""``python -m torpor``: the same as the ``torpor`` command."""

from torpor.cli import main

main()
