"""The mailbox protocol: per-session mailboxes with a priority and a normal lane (DESIGN §7).

``Mailbox`` is what a backend implements to share mailboxes between processes
(capability ``SHARED_MAILBOX``, which goes with ``ATOMIC_UPDATE``).  Without one, the
manager uses the core's in-process mailbox (``torpor.LocalMailbox``, in
``torpor._fallbacks``).

Messages cross this seam already encoded (``bytes``); the manager encodes on send and
decodes on receive, so a mailbox never sees user objects.

Every message belongs to one *incarnation* of a session (``Record.incarnation``): a
session deleted and created again under the same id is a new incarnation with an
empty mailbox.  How a backend keeps mail and records in step is the hook contract in
``torpor.hookspecs`` ("Incarnations, removals and the mailbox").
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Mailbox"]


class Mailbox(Protocol):
    """What a backend's mailbox must do.  Every method is thread-safe."""

    def send(self, session_id: str, incarnation: int, message: bytes, priority: bool) -> bool:
        """Append ``message`` to the session's priority or normal lane, if the stored
        record of ``session_id`` still has ``incarnation``: the check and the append
        are one atomic step (one transaction).  Return False, appending nothing, if the
        record is gone or is another incarnation."""
        ...

    def receive(
        self, session_id: str, incarnation: int, max_messages: int, timeout: float
    ) -> list[bytes]:
        """Take up to ``max_messages`` of this incarnation's messages: priority lane
        first, each lane FIFO, each message delivered to exactly one caller (in any
        process).  Taking a priority message must not cost more because normal
        messages are queued.

        With nothing queued, wait up to ``timeout`` seconds (0: do not wait) and return
        ``[]`` if still nothing; a huge finite timeout must not overflow (wait in
        slices).  If the incarnation is removed while waiting, raise
        ``SessionCancelled`` when the removal was a ``CANCEL``, ``SessionNotFound``
        otherwise.  If it is already gone when ``receive`` begins, raise
        ``SessionNotFound`` (a backend that still knows it was cancelled may raise
        ``SessionCancelled``).  After :meth:`close`, raise ``ManagerClosed``.  A message
        taken is never lost to such an error: it is returned."""
        ...

    def pending(self, session_id: str, incarnation: int) -> int:
        """How many messages of this incarnation wait (both lanes)."""
        ...

    def waiters(self, session_id: str) -> int:
        """How many receivers *in this process* wait in ``receive`` for the session,
        counted only once they have checked that it is alive (so a cancel after a
        positive count reaches them as ``SessionCancelled``)."""
        ...

    def close(self) -> None:
        """Release resources; every waiter in this process raises ``ManagerClosed``."""
        ...
