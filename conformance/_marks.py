"""Marks every kit test with its area and required capabilities.

The marks go on each test *function*, not on the module (``pytestmark``), because a
third-party suite pulls the functions into its own module with a star import, and
module marks do not travel with them.
"""

from __future__ import annotations

from typing import Any

import pytest

__all__ = ["kit_module"]


def kit_module(namespace: dict[str, Any], area: str, *requires: str) -> None:
    """Call at the end of a suite module: marks every ``test_*`` function in it."""
    module = namespace["__name__"]
    for name, value in list(namespace.items()):
        if name.startswith("test_") and getattr(value, "__module__", None) == module:
            marked = pytest.mark.torpor_area(area)(value)
            if requires:
                marked = pytest.mark.torpor_requires(*requires)(marked)
            namespace[name] = marked
