"""The session record handed to users."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Session"]


@dataclass(frozen=True, slots=True)
class Session:
    """An immutable snapshot of one session.

    ``data`` belongs to the caller: torpor never keeps a reference to a dict it handed
    out or was handed, so mutating it changes nothing stored.  Write changes back with
    ``Manager.update`` (atomic read-modify-write) or ``Manager.save`` (optimistic).

    ``version`` counts writes of ``data`` (create, update, save).  Touching, waking,
    hibernating and ``set_timeout`` leave it alone, so that two readers never make each
    other's ``save`` conflict.
    """

    id: str
    data: dict[str, Any]
    created_at: int
    last_accessed: int
    timeout_ms: int | None
    version: int
    hibernated: bool = False

    def is_expired(self, now: int) -> bool:
        """Expired iff it has a timeout and strictly more than that has passed."""
        return self.timeout_ms is not None and now - self.last_accessed > self.timeout_ms

    def expires_at(self) -> int | None:
        """The last millisecond at which the session is still alive, or None."""
        return None if self.timeout_ms is None else self.last_accessed + self.timeout_ms
