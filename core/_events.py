"""Lifecycle events delivered to observer plugins (hook ``torpor_event``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["EventKind", "LifecycleEvent"]


class EventKind(enum.Enum):
    CREATED = "created"
    HIBERNATED = "hibernated"
    WOKEN = "woken"
    EXPIRED = "expired"
    DELETED = "deleted"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """One event.  Sweeps report one event per batch: ``session_id`` is then None and
    ``count`` says how many sessions it covers.  ``bytes_saved`` is the drop in encoded
    size for hibernation (live data measured as its msgpack encoding), when known."""

    kind: EventKind
    session_id: str | None
    count: int = 1
    bytes_saved: int | None = None
