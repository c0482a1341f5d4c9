"""A plain, obviously-correct model of one store, for the state machine.

It is written from the contract (docs/contract.md) alone, as dictionaries and
arithmetic, sharing no code with the manager: if both agree over thousands of random
steps, the backend (and the core's handling of it) keep the contract.
:func:`check_counts` holds a manager's every report of its size against the figures
they must show (the model's, or a test's own).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torpor

__all__ = ["Counts", "Model", "ModelSession", "check_counts"]


@dataclass(frozen=True)
class ModelSession:
    data: dict[str, Any]
    created_at: int
    last_accessed: int
    timeout_ms: int | None
    version: int
    hibernated: bool
    life: int  # which incarnation of the id: a re-created id is a new life

    def expired(self, now: int) -> bool:
        return self.timeout_ms is not None and now - self.last_accessed > self.timeout_ms


class Model:
    """Stored sessions, expired ones included until something removes them."""

    def __init__(self, touch_resolution_ms: int) -> None:
        self.stored: dict[str, ModelSession] = {}
        self.resolution = touch_resolution_ms
        self.lives = 0

    def live(self, sid: str, now: int) -> ModelSession | None:
        s = self.stored.get(sid)
        return None if s is None or s.expired(now) else s

    def live_ids(self, now: int) -> set[str]:
        return {sid for sid, s in self.stored.items() if not s.expired(now)}

    def drop_if_expired(self, sid: str, now: int) -> None:
        s = self.stored.get(sid)
        if s is not None and s.expired(now):
            del self.stored[sid]

    def create(self, sid: str, data: dict[str, Any], now: int, timeout: int | None) -> bool:
        if self.live(sid, now) is not None:
            return False
        self.lives += 1
        self.stored[sid] = ModelSession(data, now, now, timeout, 1, False, self.lives)
        return True

    def get(self, sid: str, now: int) -> ModelSession | None:
        self.drop_if_expired(sid, now)
        s = self.stored.get(sid)
        if s is None:
            return None
        if s.hibernated or now - s.last_accessed >= self.resolution:
            s = replace(s, last_accessed=max(now, s.last_accessed), hibernated=False)
            self.stored[sid] = s
        return s

    def write(self, sid: str, data: dict[str, Any], now: int) -> ModelSession | None:
        self.drop_if_expired(sid, now)
        s = self.stored.get(sid)
        if s is None:
            return None
        s = replace(
            s, data=data, last_accessed=max(now, s.last_accessed), version=s.version + 1,
            hibernated=False,
        )  # fmt: skip
        self.stored[sid] = s
        return s

    def touch(self, sid: str, now: int) -> bool:
        self.drop_if_expired(sid, now)
        s = self.stored.get(sid)
        if s is None:
            return False
        self.stored[sid] = replace(s, last_accessed=max(now, s.last_accessed))
        return True

    def delete(self, sid: str, now: int) -> bool:
        s = self.stored.pop(sid, None)
        return s is not None and not s.expired(now)

    def hibernate(self, threshold: int, now: int) -> int:
        idle = [
            sid
            for sid, s in self.stored.items()
            if not s.hibernated and now - s.last_accessed > threshold
        ]
        for sid in idle:
            self.stored[sid] = replace(self.stored[sid], hibernated=True)
        return len(idle)

    def cleanup(self, now: int) -> int:
        expired = [sid for sid, s in self.stored.items() if s.expired(now)]
        for sid in expired:
            del self.stored[sid]
        return len(expired)

    def set_timeout(self, sid: str, timeout: int | None, now: int) -> bool:
        """A new timeout, measured from the last access as before; no touch, and the
        version stays (it counts writes of the data)."""
        self.drop_if_expired(sid, now)
        s = self.stored.get(sid)
        if s is None:
            return False
        self.stored[sid] = replace(s, timeout_ms=timeout)
        return True

    def find(self, criteria: dict[str, Any], now: int) -> set[str]:
        """Live sessions whose data equals every criterion, by Python's ``==``."""
        return {
            sid
            for sid, s in self.stored.items()
            if not s.expired(now)
            and all(field in s.data and s.data[field] == value for field, value in criteria.items())
        }

    def counts(self, now: int) -> Counts:
        """What ``len()``, ``ids()`` and ``stats()`` must say about the store."""
        live = [s for s in self.stored.values() if not s.expired(now)]
        asleep = sum(s.hibernated for s in live)
        pending = len(self.stored) - len(live)
        return Counts(len(live), len(live) - asleep, asleep, pending, len(self.stored))


@dataclass(frozen=True)
class Counts:
    """A store's size, every way it is reported: ``len()`` and ``ids()`` count
    ``sessions`` (active + hibernated); ``stored`` adds the expired records no call
    has removed yet (``expired_pending``)."""

    sessions: int
    active: int
    hibernated: int
    expired_pending: int
    stored: int


def check_counts(mgr: torpor.Manager, want: Counts, live: Collection[str], when: str) -> None:
    """``ids()`` yields each of ``live`` once and nothing else, and ``len()`` and
    ``stats()`` agree with ``want`` (and report nothing damaged).  ``when`` names the
    step in a failure."""
    walked = list(mgr.ids())
    twice = sorted(sid for sid, n in Counter(walked).items() if n > 1)
    assert not twice, f"after {when}: ids() yielded {twice} more than once"
    assert set(walked) == set(live), (
        f"after {when}: ids() missed {sorted(set(live) - set(walked))}, "
        f"yielded unexpected {sorted(set(walked) - set(live))}"
    )
    size = len(mgr)
    assert size == want.sessions, f"after {when}: len() is {size}, not {want.sessions}"
    stats = mgr.stats()
    got = Counts(
        stats.sessions, stats.active, stats.hibernated, stats.expired_pending, stats.stored
    )
    assert (got, stats.damaged) == (want, 0), (
        f"after {when}: stats() {got} (damaged={stats.damaged}); expected {want}"
    )
