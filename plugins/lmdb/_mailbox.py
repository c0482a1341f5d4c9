"""Mailboxes inside the LMDB environment, shared by every process that opens it.

Keys: ``id  0x00  lane  seq`` where lane 0x00 is priority and 0x01 normal, and seq a
big-endian counter kept in the environment, so each lane is FIFO and a priority
receive is one cursor seek, whatever waits in the normal lane.

Mail and records change together (see ``_store.py``): ``send`` appends only if the
session's stored incarnation is the sender's, checked in the same write transaction;
every removal of a session deletes its mail in the removing transaction.  So the mail
under an id always belongs to the incarnation stored under it.  Taking messages is a
write transaction too (LMDB serialises writers across processes), so each message
goes to exactly one receiver.

LMDB has no notifications: a waiting receiver polls (a read transaction) every 20 ms
for sends and removals made elsewhere (other processes, other managers), and wakes at
once for those made through its own manager, which notify it after they commit.
When its incarnation is gone, the tombstone of a cancellation makes it raise
``SessionCancelled``; no tombstone, ``SessionNotFound``.  It takes messages in a write
transaction only when a read transaction saw some.
"""

from __future__ import annotations

import struct
import time
from typing import Final

from torpor import LocalReceivers, gone_while_waiting
from torpor.errors import ManagerClosed
from torpor.plugins.lmdb._env import SharedEnv, Txn
from torpor.plugins.lmdb._store import Store, incarnation_bits, mail_prefix

__all__ = ["LmdbMailbox"]

PRIORITY: Final = b"\x00"
NORMAL: Final = b"\x01"
LANES: Final = (PRIORITY, NORMAL)
POLL_S: Final = 0.02
_SEQ_KEY: Final = b"mail_seq"
_U64 = struct.Struct(">Q")


class LmdbMailbox:
    """The ``torpor.Mailbox`` of the lmdb backend."""

    def __init__(self, shared: SharedEnv, store: Store) -> None:
        self._shared = shared
        self._store = store
        self._receivers = LocalReceivers()

    # -- the protocol ----------------------------------------------------------------
    def send(self, session_id: str, incarnation: int, message: bytes, priority: bool) -> bool:
        key = session_id.encode("utf-8")
        head = mail_prefix(key) + (PRIORITY if priority else NORMAL)
        store = self._store
        wanted = incarnation_bits(incarnation)

        def put(txn: Txn) -> bool:
            store.tidy(txn)
            if not store.is_live(txn, key, wanted, repair=True):
                return False
            seq = self._next_seq(txn)
            txn.put(_SEQ_KEY, _U64.pack(seq), db=store.dbs.counters)
            txn.put(head + _U64.pack(seq), message, db=store.dbs.mail)
            _refuse_if_closed(store)
            return True

        sent = self._shared.write(put)
        if sent:
            self.changed(session_id)
        return sent

    def receive(
        self, session_id: str, incarnation: int, max_messages: int, timeout: float
    ) -> list[bytes]:
        self._shared.check()
        deadline = time.monotonic() + timeout
        key = session_id.encode("utf-8")
        wanted = incarnation_bits(incarnation)
        with self._receivers.receiving(session_id) as receiver:
            while True:
                generation = receiver.round()
                alive, queued, cancelled = self._shared.read(
                    lambda txn: self._look(txn, key, wanted)
                )
                if queued:
                    taken, alive, cancelled = self._shared.write(
                        lambda txn: self._take(txn, key, wanted, max_messages)
                    )
                    if taken:
                        return taken
                if not alive:
                    raise gone_while_waiting(session_id, cancelled)
                receiver.saw_alive()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                receiver.wait(generation, min(remaining, POLL_S))

    def pending(self, session_id: str, incarnation: int) -> int:
        key = session_id.encode("utf-8")
        prefix = mail_prefix(key)
        wanted = incarnation_bits(incarnation)

        def count(txn: Txn) -> int:
            if not self._store.is_live(txn, key, wanted):
                return 0
            cursor = txn.cursor(db=self._store.dbs.mail)
            n = 0
            for lane in LANES:  # (a foreign key in another "lane" is nobody's mail)
                head = prefix + lane
                if cursor.set_range(head):
                    for found in cursor.iternext(values=False):
                        if not found.startswith(head):
                            break
                        n += 1
            return n

        return self._shared.read(count)

    def waiters(self, session_id: str) -> int:
        return self._receivers.waiters(session_id)

    def close(self) -> None:
        self._receivers.close()

    # -- for the backend -------------------------------------------------------------
    def changed(self, session_id: str) -> None:
        """A local commit sent to, or removed, the session: wake its receivers here."""
        self._receivers.changed(session_id)

    # -- internals -------------------------------------------------------------------
    def _look(self, txn: Txn, key: bytes, wanted: int) -> tuple[bool, bool, bool]:
        """(alive, messages queued, cancelled) for that incarnation, in one snapshot."""
        if not self._store.is_live(txn, key, wanted):
            return False, False, self._store.cancelled(txn, key, wanted)
        prefix = mail_prefix(key)
        cursor = txn.cursor(db=self._store.dbs.mail)
        for lane in LANES:  # exactly what _take takes: no write for a foreign key
            head = prefix + lane
            if cursor.set_range(head) and cursor.key().startswith(head):
                return True, True, False
        return True, False, False

    def _take(
        self, txn: Txn, key: bytes, wanted: int, limit: int
    ) -> tuple[list[bytes], bool, bool]:
        store = self._store
        store.tidy(txn)
        if not store.is_live(txn, key, wanted, repair=True):
            return [], False, store.cancelled(txn, key, wanted)
        taken: list[bytes] = []
        cursor = txn.cursor(db=self._store.dbs.mail)
        for lane in LANES:
            head = mail_prefix(key) + lane
            if not cursor.set_range(head):
                continue
            while len(taken) < limit and cursor.key().startswith(head):
                taken.append(cursor.value())
                if not cursor.delete():  # moves to the next entry
                    break
        _refuse_if_closed(store)  # taken by a closed manager: leave them queued
        return taken, True, False

    def _next_seq(self, txn: Txn) -> int:
        """The next mail sequence number.  A missing or damaged counter is recomputed
        from the mail keys (once: it is rewritten), so each lane stays FIFO."""
        dbs = self._store.dbs
        raw = txn.get(_SEQ_KEY, db=dbs.counters)
        if raw is not None and len(raw) == _U64.size:
            return int(_U64.unpack(raw)[0]) + 1
        if raw is not None:
            self._store.once.warn(
                ("counters", raw), "torpor: the mail counter in %s is damaged (%r); "
                "recomputing it from the queued mail", dbs.name("counters"), raw[:40],
            )  # fmt: skip
        highest = -1
        for found in txn.cursor(db=dbs.mail).iternext(values=False):
            # id 0x00 lane seq: at least one byte of id, a NUL, a lane byte, 8 bytes.
            if len(found) >= 11 and found[-10] == 0 and found[-9:-8] in LANES:
                highest = max(highest, _U64.unpack(found[-8:])[0])
        return highest + 1


def _refuse_if_closed(store: Store) -> None:
    """Before a mailbox write commits: a backend closed (urgently) meanwhile does not
    acknowledge it."""
    if store.closing:
        raise ManagerClosed("the manager was closed; this mailbox change was not applied")
