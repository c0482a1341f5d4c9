"""A plain, obviously-correct model of one store, for the state machine.

It is written from DESIGN.md alone, as dictionaries and arithmetic, sharing no code
with the manager: if both agree over thousands of random steps, the backend (and the
core's handling of it) keep the contract.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = ["Model", "ModelSession"]


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
