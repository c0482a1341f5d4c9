"""Deliberately broken backends for the distributed area: claims of ``DISTRIBUTED`` by
backends whose state never leaves the host.

``LmdbClaimsDistributed`` is the real LMDB backend, which passes the multiprocess area
(processes on one host share its files).  ``ClaimsDistributed`` (in ``basics``, an
ets_like store claiming it) was refused at open while the kit could not test the claim;
now the distributed area catches it too: its sessions live in one process's memory.
"""

from __future__ import annotations

from collections.abc import Iterable

from tests.broken_backends.storage import _Lmdb
from torpor import Capability, backend_factory
from torpor.plugins.lmdb._backend import CAPABILITIES as LMDB_CAPABILITIES

__all__ = ["LmdbClaimsDistributed"]


@backend_factory(
    capabilities={*LMDB_CAPABILITIES, Capability.DISTRIBUTED}, storage_options={"path": "sessions"}
)
class LmdbClaimsDistributed(_Lmdb):
    """Claims DISTRIBUTED "because the folder can live on a network share": every host
    then opens the LMDB files its own ``path`` names, and shares nothing."""

    def torpor_capabilities(self) -> Iterable[Capability]:
        return {*super().torpor_capabilities(), Capability.DISTRIBUTED}


BROKEN: dict[str, str] = {
    "LmdbClaimsDistributed": "distributed",
    "ClaimsDistributed": "distributed",
}
"""Each broken backend and the area of the kit that must catch it."""
