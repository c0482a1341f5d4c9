"""The kit's areas, and which capability decides native or fallback for each."""

from __future__ import annotations

from dataclasses import dataclass

from torpor import Capability

__all__ = ["AREAS", "Area"]


@dataclass(frozen=True)
class Area:
    name: str
    title: str
    capability: Capability | None  # None: core semantics over the required hooks
    fallback: bool  # whether the core has a fallback when the capability is missing


AREAS: dict[str, Area] = {
    a.name: a
    for a in (
        Area("crud", "create/get/peek/update/save/touch/delete, errors", None, True),
        Area("ids", "UTF-8 id corpus, exact code points", None, True),
        Area("expiry", "expiry boundary, cleanup_expired", Capability.NATIVE_EXPIRY, True),
        Area("hibernation", "hibernate_idle, wake, memory", Capability.NATIVE_HIBERNATION, True),
        Area(
            "iteration", "ids()/sessions() exactly once, memory", Capability.NATIVE_ITERATION, True
        ),
        Area("mailbox", "priority lanes, exactly once, cancel", Capability.SHARED_MAILBOX, True),
        Area("concurrency", "no lost updates", Capability.ATOMIC_UPDATE, True),
        Area("find", "find() and create_index()", Capability.SECONDARY_INDEX, True),
        Area("persistence", "reopen keeps everything", Capability.PERSISTENT, False),
        Area("multiprocess", "several processes at once", Capability.MULTI_PROCESS, False),
        Area(
            "distributed",
            "processes sharing nothing but the options: sessions, updates, sweeps, mail",
            Capability.DISTRIBUTED,
            False,
        ),
        Area(
            "transactions",
            "multi-session transactions: all or nothing, isolated, re-run, nested",
            Capability.TRANSACTIONS,
            False,
        ),
        Area(
            "damaged", "foreign and damaged stored values: skipped, counted, removable", None, True
        ),
        Area("model", "hypothesis state machine against a plain model", None, True),
    )
}
