"""The mailbox protocol: per-session mailboxes with a priority and a normal lane.

What users see is in ``docs/contract.md`` ("Mailboxes"); this is the seam below it.
``Mailbox`` is what a backend implements to share mailboxes between processes
(capability ``SHARED_MAILBOX``, which goes with ``ATOMIC_UPDATE``): its
``torpor_mailbox()`` hook returns one, once, when the manager opens.  Without one,
the manager uses the core's in-process mailbox, ``torpor.LocalMailbox`` (in
``torpor._fallbacks``), which is also the reference implementation of every rule
below.

How the manager calls a mailbox
===============================

* Messages cross this seam already encoded (``bytes``); the manager encodes on send
  and decodes on receive, so a mailbox never sees user objects.
* The manager validates every argument first (the id, ``max_messages >= 1``, a
  finite ``timeout >= 0``) and looks the session up: a session that is missing or
  expired raises ``SessionNotFound`` before the mailbox is called.  So ``send`` and
  ``receive`` get the *incarnation* the manager saw alive (``Record.incarnation``).
* ``Manager.receive(timeout=None)`` becomes ``timeout=0.0`` here: do not wait.

Incarnations, and how removals reach the mailbox
================================================

Every message belongs to one incarnation of a session: a session deleted, cancelled
or expired and created again under the same id is a new incarnation with an empty
mailbox.  The mailbox has no ``cancel`` or ``discard`` method: a backend with its own
mailbox ends an incarnation's mail *inside the transaction that removes the record*
(``torpor_transact`` returning a ``torpor.Removal``, or a store of another
incarnation over an expired record), and leaves the removal's reason where blocked
receivers in any process find it.  ``send`` checks the incarnation in the same
atomic step as the append.  Together these make sure no message outlives its
session, none reaches a later incarnation, and none is dropped from a live one (the
hook contract, "Incarnations, removals and the mailbox" in ``torpor.hookspecs``).

(torpor 0.1's protocol had ``send(session_id, message, priority)``, ``cancel``,
``discard`` and a ``receive(..., alive)`` callback that the mailbox called once after
registering a waiter.  The incarnation arguments replace all three: the liveness
check is "does the stored record still have this incarnation", made by the mailbox
itself in its own transaction.)
"""

from __future__ import annotations

from typing import Protocol

from torpor.errors import ManagerClosed, SessionCancelled, SessionNotFound

__all__ = ["Mailbox", "closed_while_waiting", "gone_while_waiting"]


class Mailbox(Protocol):
    """What a backend's mailbox must do.  Every method is thread-safe, and callable
    from any thread at once; ``receive`` may block, nothing else may."""

    def send(self, session_id: str, incarnation: int, message: bytes, priority: bool) -> bool:
        """Append ``message`` to the end of the session's priority lane (``priority``)
        or normal lane, if the stored record of ``session_id`` still has
        ``incarnation``; the check and the append are one atomic step (one
        transaction).  Return True once the message is queued (and durable, if the
        backend is); return False, appending nothing, if the record is gone or is
        another incarnation (the manager then raises ``SessionNotFound``).

        A send wakes this process's receivers of the session at once; receivers in
        other processes learn of it within the backend's polling interval."""
        ...

    def receive(
        self, session_id: str, incarnation: int, max_messages: int, timeout: float
    ) -> list[bytes]:
        """Take up to ``max_messages`` (>= 1) of this incarnation's messages and
        return them: the priority lane first, each lane FIFO, each message delivered to
        exactly one caller (in any process) and removed as it is taken.  Taking a
        priority message must not cost more because normal messages are queued.

        * Something queued: return at once with what was taken (a list of 1 to
          ``max_messages``; fewer if fewer are queued).  Never wait to fill the list.
        * Nothing queued: wait up to ``timeout`` seconds (``0``: do not wait) for a
          first message, then return ``[]`` if still nothing.  A huge finite timeout
          must not overflow (wait in slices).  No busy loop: block, or poll with a
          sleep.
        * The incarnation already gone when ``receive`` begins (removed after the
          manager looked it up) and nothing of it queued: raise ``SessionNotFound``
          (a backend that still knows it was cancelled may raise
          ``SessionCancelled``), whatever the timeout.
        * Removed while waiting: raise ``SessionCancelled`` if the removal was a
          ``CANCEL`` and ``SessionNotFound`` otherwise (delete, expiry, or a
          ``create`` that took over an expired session).  Waiters in this process wake
          at once; in other processes, within the polling interval.  An incarnation
          that merely *passes* its timeout while stored is still there: its waiters
          are woken when it is removed (a sweep, a ``get``), or time out.
        * :meth:`close` while waiting, or called after it: raise ``ManagerClosed``.

        A message taken is never lost to such an error: a call that has taken messages
        returns them instead of raising."""
        ...

    def pending(self, session_id: str, incarnation: int) -> int:
        """How many messages of this incarnation wait (both lanes); 0 if the
        incarnation is gone.  Does not block and takes nothing."""
        ...

    def waiters(self, session_id: str) -> int:
        """How many receivers *in this process* are inside ``receive`` for the session,
        counted only once they have checked that their incarnation is alive: a removal
        made after a positive count reaches each of them (as ``SessionCancelled`` for a
        cancel).  Tests rely on it to know a consumer is blocked without sleeping
        (``torpor.conformance.helpers.wait_for_waiter``)."""
        ...

    def close(self) -> None:
        """Called once, by ``Manager.close()``, before the backend's ``torpor_close``.
        Every receiver waiting in this process raises ``ManagerClosed``, and so does
        any later ``receive``.  A shared mailbox keeps what is queued: another process,
        or a manager opened later, receives it."""
        ...


def closed_while_waiting(session_id: str) -> ManagerClosed:
    """What a receiver raises when the manager closes (the same words everywhere)."""
    return ManagerClosed(f"the manager was closed while waiting on session {session_id!r}")


def gone_while_waiting(session_id: str, cancelled: bool) -> Exception:
    """What a receiver raises when its incarnation ends: ``SessionCancelled`` for a
    cancel, ``SessionNotFound`` otherwise."""
    if cancelled:
        return SessionCancelled(f"session {session_id!r} was cancelled")
    return SessionNotFound(f"session {session_id!r} was deleted or has expired")
