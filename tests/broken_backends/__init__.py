"""Deliberately broken backends: the kit must catch every one.

``tests/test_kit_catches.py`` runs the conformance kit against each and expects the
area named in :data:`BROKEN` to fail (and those in :data:`REFUSED` to be refused
before any test runs).  Each is a small, realistic mistake of a plugin author on top
of a working backend, not a caricature; none sleeps to widen a race.

The modules follow the bug classes of the reviews:

* ``basics``: the first review's ten, plus claims the kit cannot check;
* ``indexes``: sweeps past one batch, index bookkeeping across transitions, and
  secondary indexes (with ``IndexedMinimal``, a correct native index to break);
* ``walks``: iteration edges and mailbox lifecycle (with ``SortedKeys`` and
  ``OwnMailbox``, correct native bases);
* ``storage``: multi-process visibility, durability and atomicity, and damaged or
  foreign data (most on the real LMDB backend);
* ``distributed``: claims of ``DISTRIBUTED`` by backends whose state stays on one host;
* ``transactions``: multi-session transactions (with ``LockedTransactions``, a correct
  one to break).

Run one by hand: ``torpor conformance tests.broken_backends:NAME --area AREA``.
"""

from tests.broken_backends import basics, distributed, indexes, storage, transactions, walks
from tests.broken_backends.basics import *  # noqa: F403
from tests.broken_backends.distributed import *  # noqa: F403
from tests.broken_backends.indexes import *  # noqa: F403
from tests.broken_backends.storage import *  # noqa: F403
from tests.broken_backends.transactions import *  # noqa: F403
from tests.broken_backends.walks import *  # noqa: F403

BROKEN: dict[str, str] = {
    **basics.BROKEN,
    **indexes.BROKEN,
    **walks.BROKEN,
    **storage.BROKEN,
    **distributed.BROKEN,
    **transactions.BROKEN,
}
"""Each broken backend (a name in this package) and the kit area that must catch it."""

REFUSED: dict[str, str] = basics.REFUSED
"""Backends the kit refuses before any test runs, with the claim it refuses."""

HEALTHY: tuple[str, ...] = (
    "IndexedMinimal",
    "ExpiringMinimal",
    "LockedTransactions",
    "SortedKeys",
    "OwnMailbox",
)
"""The correct bases some broken backends are built on: they pass the whole kit."""
