"""Receivers blocked in this process, for a backend whose mailbox others reach by polling.

A mailbox kept in a store that several processes share (an LMDB environment, a
SQLite file) has no way to wake a receiver in another process: that receiver looks
again every few milliseconds.  Within one process it can do better, and this is the
bookkeeping for it: a receiver joins its session's entry while it waits; a send or a
removal committed by this process calls :meth:`LocalReceivers.changed`, which wakes
the session's receivers at once; :meth:`LocalReceivers.close` wakes them all, to
raise ``ManagerClosed``; and :meth:`LocalReceivers.waiters` counts the receivers that
saw their session alive (``Mailbox.waiters``).  The lmdb and mnesia_like mailboxes
use it; a third-party backend may too.

A receive loop::

    with receivers.receiving(session_id) as receiver:
        while True:
            generation = receiver.round()        # ManagerClosed once closed
            ...look at the store; return what it took, or raise if the session is gone...
            receiver.saw_alive()
            if time is up: return []
            receiver.wait(generation, POLL_S)    # True: woken by a local change
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from torpor._mailbox import closed_while_waiting

__all__ = ["LocalReceivers", "Receiver"]


class _Entry:
    """The receivers of one session."""

    __slots__ = ("checked", "cond", "generation", "users")

    def __init__(self, lock: threading.Lock) -> None:
        self.cond = threading.Condition(lock)
        self.generation = 0  # bumped by every local change that concerns the session
        self.users = 0  # receivers holding this entry
        self.checked = 0  # of them, those that saw the session alive (``waiters``)


class Receiver:
    """One waiting receive (see the module docstring)."""

    __slots__ = ("_checked", "_entry", "_owner", "_session_id")

    def __init__(self, owner: LocalReceivers, session_id: str, entry: _Entry) -> None:
        self._owner = owner
        self._session_id = session_id
        self._entry = entry
        self._checked = False

    def round(self) -> int:
        """Start a look at the store: the generation to wait on afterwards;
        ``ManagerClosed`` once the mailbox is closed."""
        with self._owner.lock:
            if self._owner.closed:
                raise closed_while_waiting(self._session_id)
            return self._entry.generation

    def saw_alive(self) -> None:
        """The session was alive at the last look: this receiver counts as waiting."""
        if not self._checked:
            self._checked = True
            with self._owner.lock:
                self._entry.checked += 1

    def wait(self, generation: int, seconds: float) -> bool:
        """Sleep up to ``seconds`` unless a local change came since ``generation``;
        True if one did (look again at once: the store changed)."""
        entry = self._entry
        with self._owner.lock:
            if entry.generation == generation and not self._owner.closed:
                entry.cond.wait(seconds)
            return entry.generation != generation


class LocalReceivers:
    """The receivers of one mailbox in this process (see the module docstring)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.closed = False
        self._entries: dict[str, _Entry] = {}

    @contextmanager
    def receiving(self, session_id: str) -> Iterator[Receiver]:
        """A receiver of ``session_id`` for as long as the block runs."""
        with self.lock:
            entry = self._entries.get(session_id)
            if entry is None:
                entry = self._entries[session_id] = _Entry(self.lock)
            entry.users += 1
        receiver = Receiver(self, session_id, entry)
        try:
            yield receiver
        finally:
            with self.lock:
                entry.users -= 1
                entry.checked -= receiver._checked
                if not entry.users and self._entries.get(session_id) is entry:
                    del self._entries[session_id]

    def changed(self, session_id: str) -> None:
        """A commit of this process sent to, or removed, the session: wake its
        receivers here."""
        if not self._entries:  # the usual case: nobody waits; no lock taken
            return
        with self.lock:
            entry = self._entries.get(session_id)
            if entry is not None:
                entry.generation += 1
                entry.cond.notify_all()

    def close(self) -> None:
        """Wake every receiver, to raise ``ManagerClosed``."""
        with self.lock:
            self.closed = True
            for entry in self._entries.values():
                entry.generation += 1
                entry.cond.notify_all()

    def waiters(self, session_id: str) -> int:
        """Receivers of the session that saw it alive (``Mailbox.waiters``)."""
        with self.lock:
            entry = self._entries.get(session_id)
            return 0 if entry is None else entry.checked
