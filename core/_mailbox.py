"""Per-session mailboxes with a priority lane and a normal lane (DESIGN §7).

``Mailbox`` is the protocol a backend implements to share mailboxes between
processes (capability ``SHARED_MAILBOX``).  ``LocalMailbox`` is the core's in-process
implementation, used when a backend has none.

Messages cross this seam already encoded (``bytes``); the manager encodes on send and
decodes on receive, so a mailbox never sees user objects.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from torpor.errors import SessionCancelled, SessionNotFound

__all__ = ["LocalMailbox", "Mailbox"]


class Mailbox(Protocol):
    """What a backend's mailbox must do.  Every method is thread-safe."""

    def send(self, session_id: str, message: bytes, priority: bool) -> None:
        """Append ``message`` to the session's priority or normal lane."""

    def receive(
        self,
        session_id: str,
        max_messages: int,
        timeout: float | None,
        alive: Callable[[], bool],
    ) -> list[bytes]:
        """Take up to ``max_messages``: priority lane first, each lane FIFO, each message
        delivered to exactly one caller.  With nothing queued, wait up to ``timeout``
        seconds (None or 0: do not wait) and return ``[]`` if still nothing.  Taking a
        priority message must not cost more because normal messages are queued.  While
        waiting, raise ``SessionCancelled`` if the session is cancelled and
        ``SessionNotFound`` if it is deleted.

        ``alive()`` says whether the session still exists.  Call it once *after* this
        receiver can be woken by ``cancel``/``discard`` and before blocking, and raise
        ``SessionNotFound`` if it returns False: the manager deletes the session before
        it cancels the mailbox, so this closes the window in which a cancel would
        otherwise go unseen and the receiver would sleep for its whole timeout."""
        ...

    def pending(self, session_id: str) -> int:
        """How many messages wait for the session (both lanes)."""
        ...

    def waiters(self, session_id: str) -> int:
        """How many receivers *in this process* are inside ``receive`` for the session,
        counted only once they have seen it alive (so a cancel after a positive count
        reaches them as ``SessionCancelled``)."""
        ...

    def cancel(self, session_id: str) -> None:
        """Discard the session's messages and wake its waiters with ``SessionCancelled``."""

    def discard(self, session_id: str) -> None:
        """The session was deleted: discard its messages and wake its waiters with
        ``SessionNotFound``."""

    def close(self) -> None:
        """Release resources; wake every waiter (they raise ``SessionNotFound``)."""


class _Box:
    __slots__ = ("ended", "normal", "priority", "waiters")

    def __init__(self) -> None:
        self.priority: deque[bytes] = deque()
        self.normal: deque[bytes] = deque()
        self.ended: type[Exception] | None = None
        self.waiters = 0


class LocalMailbox:
    """In-process mailboxes: two deques per session and one condition variable.

    Boxes are created on the first send and removed when they are emptied, cancelled or
    discarded, so idle sessions cost nothing here.
    """

    def __init__(self) -> None:
        self._boxes: dict[str, _Box] = {}
        self._cond = threading.Condition(threading.Lock())

    def send(self, session_id: str, message: bytes, priority: bool) -> None:
        with self._cond:
            box = self._boxes.get(session_id)
            if box is None:
                box = self._boxes[session_id] = _Box()
            (box.priority if priority else box.normal).append(message)
            self._cond.notify_all()

    def receive(
        self,
        session_id: str,
        max_messages: int,
        timeout: float | None,
        alive: Callable[[], bool],
    ) -> list[bytes]:
        deadline = None if not timeout else time.monotonic() + timeout
        with self._cond:
            box = self._boxes.get(session_id)
            if box is None:
                box = self._boxes[session_id] = _Box()
            box.waiters += 1
            try:
                if box.ended is None and not (box.priority or box.normal) and not alive():
                    raise SessionNotFound(f"session {session_id!r} does not exist")
                while True:
                    if box.ended is not None:
                        raise _ended(box.ended, session_id)
                    taken = _take(box, max_messages)
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if taken or remaining is None or remaining <= 0:
                        return taken
                    self._cond.wait(remaining)
            finally:
                box.waiters -= 1
                # A box lives while it holds messages or waiters; then it is dropped.
                idle = not box.waiters and not box.priority and not box.normal
                if idle and self._boxes.get(session_id) is box:
                    del self._boxes[session_id]

    def pending(self, session_id: str) -> int:
        with self._cond:
            box = self._boxes.get(session_id)
            return 0 if box is None else len(box.priority) + len(box.normal)

    def waiters(self, session_id: str) -> int:
        # Under the lock: a receiver holds it from registering until it waits, so a
        # positive count means it has passed its liveness check.
        with self._cond:
            box = self._boxes.get(session_id)
            return 0 if box is None or box.ended is not None else box.waiters

    def cancel(self, session_id: str) -> None:
        self._end(session_id, SessionCancelled)

    def discard(self, session_id: str) -> None:
        self._end(session_id, SessionNotFound)

    def close(self) -> None:
        with self._cond:
            for box in self._boxes.values():
                box.ended = SessionNotFound
            self._boxes.clear()
            self._cond.notify_all()

    def _end(self, session_id: str, reason: type[Exception]) -> None:
        with self._cond:
            box = self._boxes.pop(session_id, None)
            if box is not None:
                box.priority.clear()
                box.normal.clear()
                box.ended = reason
                self._cond.notify_all()


def _take(box: _Box, max_messages: int) -> list[bytes]:
    taken: list[bytes] = []
    for lane in (box.priority, box.normal):
        while lane and len(taken) < max_messages:
            taken.append(lane.popleft())
    return taken


def _ended(reason: type[Exception], session_id: str) -> Exception:
    if reason is SessionCancelled:
        return SessionCancelled(f"session {session_id!r} was cancelled while waiting")
    return SessionNotFound(f"session {session_id!r} was deleted while waiting")
