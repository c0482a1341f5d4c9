"""The torpor conformance kit: one suite that proves a backend keeps torpor's semantics.

Three ways to run it (pytest and hypothesis needed: ``pip install 'torpor[conformance]'``):

1. ``torpor conformance NAME [--option key=value ...]`` for any installed backend
   (``NAME`` is an entry-point name or ``package.module:factory``);
2. ``pytest -p torpor.conformance.plugin --torpor-backend NAME``;
3. inside your own test suite: a ``torpor_target`` fixture returning a
   :class:`Target`, and ``from torpor.conformance.suite import *`` in a test module
   (see ``docs/plugin-authors.md``).

Capabilities drive the run: for each area, a claimed capability is tested natively
and an unclaimed one through the core's fallback; areas with no fallback (persistence,
multiple processes) are reported as missing.  Known deviations are data
(``Target(deviations={test: reason})`` or a ``conformance_deviations`` attribute on the
backend) and run as strict xfail.  After a run the plugin prints a capability matrix
(native / fallback / missing / failing per area), and ``--torpor-report`` writes it
as JSON.

Helpers for a backend's own tests, beside the kit (the kit's tests use them too) are
in :mod:`torpor.conformance.helpers`: ``expect_raises`` and ``expect_returns`` (one
call per check, and a failure that names the call), ``blocked_consumer`` and
``wait_for_waiter`` (a consumer known to be blocked in ``receive``, without
sleeping), ``walk_peak_bytes`` (the memory a walk holds).  What the kit checks is
``docs/contract.md``.

``import torpor`` never imports this package's pytest plugin.
"""

from pathlib import Path

from torpor.conformance._areas import AREAS, Area
from torpor.conformance._kit import MODEL_EXAMPLES, STEP_MS, Kit
from torpor.conformance._target import STORAGE, Target
from torpor.conformance.helpers import expect_raises, expect_returns

SUITE_DIR = Path(__file__).resolve().parent / "suite"

__all__ = [
    "AREAS",
    "MODEL_EXAMPLES",
    "STEP_MS",
    "STORAGE",
    "SUITE_DIR",
    "Area",
    "Kit",
    "Target",
    "expect_raises",
    "expect_returns",
]
