"""Mailboxes inside the LMDB environment, shared by every process that opens it.

Keys: ``id  0x00  lane  seq`` where lane 0x00 is priority and 0x01 normal, and seq a
big-endian counter kept in the environment, so each lane is FIFO and a priority
receive is one cursor seek, whatever waits in the normal lane.  Taking messages is a
write transaction (LMDB serialises writers across processes), so each message goes to
exactly one receiver.

LMDB has no notifications: a waiting receiver wakes at once for sends and cancels
from its own process, and polls every 20 ms for other processes'.  ``cancel`` and
``discard`` leave a tombstone (time and kind), so a receiver in any process that was
waiting when its session went away raises ``SessionCancelled`` or ``SessionNotFound``
as it should; tombstones older than a minute are pruned.
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
VERDICT_WAIT_S: Final = 1.0
_U64 = struct.Struct(">Q")
_TOMBSTONE = struct.Struct(">QB")  # time (ns), kind
_DELETED: Final = 0
_CANCELLED: Final = 1


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
        self._waiting: dict[str, int] = {}  # receivers in this process, per session

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
        seen_alive = False
        verdict_by: float | None = None
        try:
            while True:
                if self._closed:
                    raise SessionNotFound(f"session {session_id!r}: the manager was closed")
                if self._shared.read(lambda txn: self._has(txn, prefix)):
                    taken = self._shared.write(lambda txn: self._take(txn, prefix, max_messages))
                    if taken:
                        return taken
                if alive():
                    if not seen_alive:
                        seen_alive = True
                        self._count_waiter(session_id, +1)
                else:
                    verdict = self._verdict(session_id, started)
                    if verdict is not None:
                        raise verdict
                    if not seen_alive:
                        raise SessionNotFound(f"session {session_id!r} does not exist")
                    # It vanished while we waited: the manager writes the tombstone
                    # right after the delete, so wait (briefly) for its verdict.
                    verdict_by = verdict_by or time.monotonic() + VERDICT_WAIT_S
                    if time.monotonic() > verdict_by:
                        raise SessionNotFound(f"session {session_id!r} was deleted")
                remaining = None if deadline is None else deadline - time.monotonic()
                if verdict_by is None and (remaining is None or remaining <= 0):
                    return []
                pause = POLL_S if remaining is None or verdict_by else min(remaining, POLL_S)
                with self._cond:
                    self._cond.wait(pause)
        finally:
            if seen_alive:
                self._count_waiter(session_id, -1)

    def _count_waiter(self, session_id: str, delta: int) -> None:
        with self._cond:
            count = self._waiting.get(session_id, 0) + delta
            if count:
                self._waiting[session_id] = count
            else:
                self._waiting.pop(session_id, None)

    def waiters(self, session_id: str) -> int:
        with self._cond:
            return self._waiting.get(session_id, 0)

    def _verdict(self, session_id: str, since_ns: int) -> Exception | None:
        """The tombstone left since ``since_ns`` by a cancel or a delete, if any."""
        raw = self._shared.read(lambda txn: txn.get(session_id.encode("utf-8"), db=self._cancels))
        if raw is None:
            return None
        stamp, kind = _TOMBSTONE.unpack(raw)
        if stamp < since_ns:
            return None
        if kind == _CANCELLED:
            return SessionCancelled(f"session {session_id!r} was cancelled while waiting")
        return SessionNotFound(f"session {session_id!r} was deleted while waiting")

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
        self._drop(session_id, _CANCELLED)

    def discard(self, session_id: str) -> None:
        self._drop(session_id, _DELETED)

    def _drop(self, session_id: str, kind: int) -> None:
        prefix = _prefix(session_id)
        now = time.time_ns()

        def drop(txn: Txn) -> None:
            cursor = txn.cursor(db=self._mail)
            if cursor.set_range(prefix):
                while cursor.key().startswith(prefix):
                    if not cursor.delete():
                        break
            old = txn.cursor(db=self._cancels)
            for key, value in list(old.iternext()):
                if now - _TOMBSTONE.unpack(value)[0] > TOMBSTONE_TTL_NS:
                    txn.delete(key, db=self._cancels)
            txn.put(session_id.encode("utf-8"), _TOMBSTONE.pack(now, kind), db=self._cancels)

        self._shared.write(drop)
        self._notify()

    def close(self) -> None:
        self._closed = True
        self._notify()
