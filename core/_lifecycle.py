"""Calls in flight, close, and calls made from inside an ``update`` function.

Every public manager call passes the manager's :class:`CallGate`: it is refused with
``ManagerClosed`` once ``close()`` has begun, and counted while it runs so that
``close()`` can wait for it (docs/contract.md §9, "lifecycle").  The count is a deque whose
``append``/``pop`` are atomic under the GIL: two cheap calls on the hot path, no
lock.  ``enter`` appends *before* it reads the closed flag and ``close`` sets the flag
*before* it reads the count, so a call is either refused or waited for, never missed.

A user's ``update`` function runs inside the backend's transaction (a lock stripe,
an LMDB write transaction), and so does the body of a multi-session transaction.  A
call back into the manager from there would deadlock or fail in the engine, so the
thread is marked while such code runs and any manager call it makes raises
``ReentrantCall`` at once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final, TypeVar

from torpor.errors import ManagerClosed, ReentrantCall

__all__ = ["CallGate", "user_code"]

T = TypeVar("T")

_UPDATE_FUNCTION: Final = (
    "a torpor manager was called from inside an update() function; the function runs "
    "inside the backend's transaction, so compute what you need before update() or make "
    "the call after it returns"
)
# Thread ident -> why its manager calls are refused, innermost last (an update
# function inside a multi-session transaction nests).
_IN_USER_CODE: dict[int, list[str]] = {}


class user_code:  # lower case: used like the function it replaced, `with user_code():`
    """Mark this thread as running user code inside a backend transaction (an
    ``update`` function, a transaction's body): manager calls raise ``ReentrantCall``
    with ``why``.  A class, not ``@contextmanager``: it wraps every ``update``
    function, and a generator-based context manager costs a microsecond more."""

    __slots__ = ("_why",)

    def __init__(self, why: str = _UPDATE_FUNCTION) -> None:
        self._why = why

    def __enter__(self) -> None:
        _IN_USER_CODE.setdefault(threading.get_ident(), []).append(self._why)

    def __exit__(self, *exc: object) -> None:
        ident = threading.get_ident()
        stack = _IN_USER_CODE[ident]
        stack.pop()
        if not stack:
            del _IN_USER_CODE[ident]


class CallGate:
    def __init__(self) -> None:
        self._inflight: deque[None] = deque()
        self._closing = threading.Lock()
        self.closed = False

    @staticmethod
    def refuse_reentry() -> None:
        if _IN_USER_CODE:
            stack = _IN_USER_CODE.get(threading.get_ident())
            if stack:
                raise ReentrantCall(stack[-1])

    def enter(self) -> None:
        self.refuse_reentry()
        self._inflight.append(None)
        if self.closed:
            self._inflight.pop()
            raise ManagerClosed("this manager is closed; open a new one with torpor.open()")

    def exit(self) -> None:
        self._inflight.pop()

    def run(self, body: Callable[[], T]) -> T:
        self.enter()
        try:
            return body()
        finally:
            self._inflight.pop()

    def begin_close(self) -> bool:
        """Refuse new calls.  True for the one caller that closes; False if closing
        had already begun (close is idempotent)."""
        with self._closing:
            if self.closed:
                return False
            self.closed = True
            return True

    def drain(self, timeout_s: float, urgent_s: float, urgent: Callable[[], bool]) -> bool:
        """Wait for the calls in flight, up to ``timeout_s``, or ``urgent_s`` once
        ``urgent()`` (an urgent close can overtake an orderly one); True if none is
        left."""
        start = time.monotonic()
        pause = 0.0001
        while self._inflight:
            waited = time.monotonic() - start
            if waited >= timeout_s or (waited >= urgent_s and urgent()):
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.01)
        return True
