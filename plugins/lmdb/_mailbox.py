"""Mailboxes inside the LMDB environment, shared by every process that opens it.

Keys: ``id  0x00  lane  seq`` where lane 0x00 is priority and 0x01 normal, and seq a
big-endian counter kept in the environment, so each lane is FIFO and a priority
receive is one cursor seek, whatever waits in the normal lane.  Taking messages is a
write transaction (LMDB serialises writers across processes), so each message goes to
exactly one receiver.

LMDB has no notifications: a waiting receiver wakes at once for sends and cancels
from its own process, and polls every 20 ms for other processes'.  ``cancel`` leaves
a tombstone with its time, so a receiver in another process that was already waiting
raises ``SessionCancelled``; tombstones older than a minute are pruned.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable
from typing import Final

from torpor.errors import SessionCancelled, SessionNotFound
from torpor.plugins.lmdb._env import Db, SharedEnv, Txn

__all__ = ["LmdbMailbox"]

PRIORITY: Final = b"\x00"
NORMAL: Final = b"\x01"
POLL_S: Final = 0.02
TOMBSTONE_TTL_NS: Final = 60 * 10**9
_SEQ_KEY: Final = b"mail_seq"
_U64 = struct.Struct(">Q")


def _prefix(session_id: str) -> bytes:
    return session_id.encode("utf-8") + b"\x00"  # ids never contain NUL


class LmdbMailbox:
    def __init__(self, shared: SharedEnv, mail: Db, cancels: Db, counters: Db) -> None:
        self._shared = shared
        self._mail = mail
        self._cancels = cancels
        self._counters = counters
        self._cond = threading.Condition()
        self._closed = False

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def send(self, session_id: str, message: bytes, priority: bool) -> None:
        head = _prefix(session_id) + (PRIORITY if priority else NORMAL)

        def put(txn: Txn) -> None:
            raw = txn.get(_SEQ_KEY, db=self._counters)
            seq = 0 if raw is None else _U64.unpack(raw)[0] + 1
            txn.put(_SEQ_KEY, _U64.pack(seq), db=self._counters)
            txn.put(head + _U64.pack(seq), message, db=self._mail)

        self._shared.write(put)
        self._notify()

    def receive(
        self,
        session_id: str,
        max_messages: int,
        timeout: float | None,
        alive: Callable[[], bool],
    ) -> list[bytes]:
        started = time.time_ns()
        deadline = None if not timeout else time.monotonic() + timeout
        prefix = _prefix(session_id)
        while True:
            if self._closed:
                raise SessionNotFound(f"session {session_id!r}: the manager was closed")
            if self._shared.read(lambda txn: self._has(txn, prefix)):
                taken = self._shared.write(lambda txn: self._take(txn, prefix, max_messages))
                if taken:
                    return taken
            if not alive():
                stamp = self._shared.read(
                    lambda txn: txn.get(session_id.encode("utf-8"), db=self._cancels)
                )
                if stamp is not None and _U64.unpack(stamp)[0] >= started:
                    raise SessionCancelled(f"session {session_id!r} was cancelled while waiting")
                raise SessionNotFound(f"session {session_id!r} does not exist")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is None or remaining <= 0:
                return []
            with self._cond:
                self._cond.wait(min(remaining, POLL_S))

    def _has(self, txn: Txn, prefix: bytes) -> bool:
        cursor = txn.cursor(db=self._mail)
        return bool(cursor.set_range(prefix) and cursor.key().startswith(prefix))

    def _take(self, txn: Txn, prefix: bytes, limit: int) -> list[bytes]:
        taken: list[bytes] = []
        cursor = txn.cursor(db=self._mail)
        for lane in (PRIORITY, NORMAL):
            head = prefix + lane
            if not cursor.set_range(head):
                continue
            while len(taken) < limit and cursor.key().startswith(head):
                taken.append(cursor.value())
                if not cursor.delete():  # moves to the next record
                    break
        return taken

    def pending(self, session_id: str) -> int:
        prefix = _prefix(session_id)

        def count(txn: Txn) -> int:
            cursor = txn.cursor(db=self._mail)
            n = 0
            if cursor.set_range(prefix):
                for key in cursor.iternext(values=False):
                    if not key.startswith(prefix):
                        break
                    n += 1
            return n

        return self._shared.read(count)

    def cancel(self, session_id: str) -> None:
        self._drop(session_id, tombstone=True)

    def discard(self, session_id: str) -> None:
        self._drop(session_id, tombstone=False)

    def _drop(self, session_id: str, *, tombstone: bool) -> None:
        prefix = _prefix(session_id)
        now = time.time_ns()

        def drop(txn: Txn) -> None:
            cursor = txn.cursor(db=self._mail)
            if cursor.set_range(prefix):
                while cursor.key().startswith(prefix):
                    if not cursor.delete():
                        break
            if tombstone:
                old = txn.cursor(db=self._cancels)
                for key, value in list(old.iternext()):
                    if now - _U64.unpack(value)[0] > TOMBSTONE_TTL_NS:
                        txn.delete(key, db=self._cancels)
                txn.put(session_id.encode("utf-8"), _U64.pack(now), db=self._cancels)

        self._shared.write(drop)
        self._notify()

    def close(self) -> None:
        self._closed = True
        self._notify()
