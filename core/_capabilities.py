"""Capabilities a backend can claim, and the figures ``Manager.stats`` reports."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["BackendStats", "Capability", "Stats"]


class Capability(enum.Enum):
    """What a backend does natively.  A claimed capability must be honoured; for an
    unclaimed one the core uses its fallback where one exists (see hookspecs)."""

    NATIVE_ITERATION = "native_iteration"
    """Implements ``torpor_iterate``: batched walk, memory follows the batch."""
    NATIVE_HIBERNATION = "native_hibernation"
    """Implements ``torpor_idle_ids``: finds idle sessions through an index."""
    NATIVE_EXPIRY = "native_expiry"
    """Implements ``torpor_expired_ids``: finds expired sessions through an index."""
    PERSISTENT = "persistent"
    """Sessions survive closing and reopening the backend over the same storage."""
    MULTI_PROCESS = "multi_process"
    """Several processes on one machine may open the same storage at once."""
    DISTRIBUTED = "distributed"
    """Several hosts may share the storage: its storage options name storage on a
    server, never local files (the kit's distributed area)."""
    ATOMIC_UPDATE = "atomic_update"
    """Implements ``torpor_transact``, atomic across every process that shares it."""
    SHARED_MAILBOX = "shared_mailbox"
    """Implements ``torpor_mailbox`` with a mailbox shared by every process."""
    TRANSACTIONS = "transactions"
    """Implements ``torpor_transaction``: ``Manager.transaction()`` over several
    sessions, atomic and isolated across every process that shares the store."""
    SECONDARY_INDEX = "secondary_index"
    """Implements ``torpor_find`` through indexes on data fields."""

    @classmethod
    def parse(cls, name: str | Capability) -> Capability:
        """``Capability`` from its value or member name; ``ValueError`` if unknown."""
        if isinstance(name, Capability):
            return name
        try:
            return cls(name.lower())
        except ValueError:
            valid = ", ".join(sorted(c.value for c in cls))
            raise ValueError(f"unknown capability {name!r}; valid: {valid}") from None


@dataclass(frozen=True, slots=True)
class BackendStats:
    """What a backend reports about itself through ``torpor_stats``.

    ``memory_bytes`` is the memory or storage the sessions take, and
    ``memory_method`` says how it was measured (e.g. ``"LMDB pages in use"``), so
    that a figure never travels without its method (docs/contract.md §11, honest figures).
    """

    memory_bytes: int | None = None
    memory_method: str | None = None


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of a manager's store, counted by one batched walk.

    ``sessions`` (= ``active + hibernated``) is what ``len()`` and ``ids()`` count.
    ``stored`` is everything the walk met: those, plus ``expired_pending`` (expired,
    not yet removed by a sweep) and ``damaged`` (values that are not intact torpor
    records, or keys that are not valid ids).
    """

    backend: str
    sessions: int
    active: int
    hibernated: int
    memory_bytes: int | None
    capabilities: frozenset[Capability]
    iteration: str  # "native" or "fallback"
    stored: int = 0
    expired_pending: int = 0
    damaged: int = 0
    memory_method: str | None = None
