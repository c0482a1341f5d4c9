"""The conformance tests, shipped with torpor.

To run them inside your own test suite, define a ``torpor_target`` fixture and pull
every test into one of your test modules::

    # conftest.py
    pytest_plugins = ["torpor.conformance.plugin"]

    # test_conformance.py
    from torpor.conformance.suite import *  # noqa: F403

``KIT_TESTS`` maps each test's name to its function; the plugin uses it to refuse
overridden tests and to notice tests that were not collected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torpor.conformance.suite.test_concurrency import *
from torpor.conformance.suite.test_crud import *
from torpor.conformance.suite.test_damaged import *
from torpor.conformance.suite.test_distributed import *
from torpor.conformance.suite.test_expiry import *
from torpor.conformance.suite.test_find import *
from torpor.conformance.suite.test_hibernation import *
from torpor.conformance.suite.test_ids import *
from torpor.conformance.suite.test_iteration import *
from torpor.conformance.suite.test_mailbox import *
from torpor.conformance.suite.test_model import *
from torpor.conformance.suite.test_multiprocess import *
from torpor.conformance.suite.test_persistence import *

KIT_TESTS: dict[str, Callable[..., Any]] = {
    name: value
    for name, value in dict(globals()).items()
    if name.startswith("test_") and hasattr(value, "__code__")  # not the submodules
}
__all__ = sorted(KIT_TESTS)
