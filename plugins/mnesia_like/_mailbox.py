"""Mailboxes in the database, shared by every process that opens it.

A message is a row of ``torpor_mail``: (seq, session rowid, incarnation, lane, body),
indexed by (session, incarnation, lane, seq).  ``seq`` is the rowid, which SQLite
hands out above every row present, so each lane is FIFO; lane 0 (priority) sorts
first, so taking a priority message is one index seek whatever waits in the normal
lane.

Mail and records change together (``_rows.py``): ``send`` appends only if the stored
record has the sender's incarnation, in one ``INSERT ... SELECT`` inside
``BEGIN IMMEDIATE``; every removal deletes the session's mail in the removing
transaction (a trigger), and a store of another incarnation deletes the old one's.
Taking messages is ``DELETE ... RETURNING`` in a write transaction, so each message
goes to exactly one receiver in any process.

Waiting: a receiver wakes at once for sends and removals made through its own
backend (they notify it after they commit); for those of other processes and other
backends it polls ``PRAGMA data_version`` every ``POLL_S`` (a look at the WAL
index in shared memory, no table read), and reads the mailbox only when another
connection has committed since its last look.  When its incarnation is gone, a
tombstone (a cancellation) makes it raise ``SessionCancelled``; none,
``SessionNotFound``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Final

from torpor import LocalReceivers, closed_while_waiting, gone_while_waiting
from torpor.errors import ManagerClosed
from torpor.plugins.mnesia_like._connections import Database
from torpor.plugins.mnesia_like._rows import cancelled, i64

__all__ = ["SqliteMailbox"]

PRIORITY: Final = 0
NORMAL: Final = 1
POLL_S: Final = 0.005
_LOOK_S: Final = 0.25  # a full look at least this often, whatever data_version says
_LOOK: Final = (
    "SELECT s.rowid, EXISTS (SELECT 1 FROM torpor_mail m WHERE m.session = s.rowid "
    "AND m.incarnation = s.incarnation) FROM torpor_sessions s "
    "WHERE s.id = ? AND s.incarnation = ?"
)


class SqliteMailbox:
    """The ``torpor.Mailbox`` of the mnesia_like backend."""

    def __init__(self, db: Database, closing: Callable[[], bool]) -> None:
        self._db = db
        self._closing = closing
        self._receivers = LocalReceivers()

    # -- the protocol ------------------------------------------------------------------
    def send(self, session_id: str, incarnation: int, message: bytes, priority: bool) -> bool:
        key = session_id.encode("utf-8")
        lane = PRIORITY if priority else NORMAL

        def put(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT INTO torpor_mail(session, incarnation, lane, body) "
                "SELECT rowid, incarnation, ?, ? FROM torpor_sessions "
                "WHERE id = ? AND incarnation = ?",
                (lane, message, key, i64(incarnation)),
            )
            self._refuse_if_closing()
            return cursor.rowcount == 1

        sent = self._db.write("send", put)
        if sent:
            self.changed(session_id)
        return sent

    def receive(
        self, session_id: str, incarnation: int, max_messages: int, timeout: float
    ) -> list[bytes]:
        if self._receivers.closed:
            raise closed_while_waiting(session_id)
        deadline = time.monotonic() + timeout
        key = session_id.encode("utf-8")
        wanted = i64(incarnation)
        seen_version: int | None = None
        last_look = 0.0
        with self._receivers.receiving(session_id) as receiver:
            while True:
                generation = receiver.round()
                version = self._db.read("receive", _data_version)
                now = time.monotonic()
                if version != seen_version or now - last_look >= _LOOK_S:
                    seen_version, last_look = version, now
                    alive, queued, was_cancelled = self._db.read(
                        "receive", lambda conn: _look(conn, key, wanted)
                    )
                    if queued:
                        taken, alive, was_cancelled = self._db.write(
                            "receive", lambda conn: self._take(conn, key, wanted, max_messages)
                        )
                        if taken:
                            return taken
                    if not alive:
                        raise gone_while_waiting(session_id, was_cancelled)
                    receiver.saw_alive()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                if receiver.wait(generation, min(remaining, POLL_S)):
                    seen_version = None  # a local change: look now

    def pending(self, session_id: str, incarnation: int) -> int:
        found = self._db.read(
            "pending",
            lambda conn: conn.execute(
                "SELECT count(*) FROM torpor_mail m JOIN torpor_sessions s "
                "ON m.session = s.rowid AND m.incarnation = s.incarnation "
                "WHERE s.id = ? AND s.incarnation = ?",
                (session_id.encode("utf-8"), i64(incarnation)),
            ).fetchone(),
        )
        return int(found[0])

    def waiters(self, session_id: str) -> int:
        return self._receivers.waiters(session_id)

    def close(self) -> None:
        self._receivers.close()

    # -- for the backend ---------------------------------------------------------------
    def changed(self, session_id: str) -> None:
        """A local commit sent to, or removed, the session: wake its receivers here."""
        self._receivers.changed(session_id)

    # -- internals ---------------------------------------------------------------------
    def _take(
        self, conn: sqlite3.Connection, key: bytes, wanted: int, limit: int
    ) -> tuple[list[bytes], bool, bool]:
        found = conn.execute(
            "SELECT rowid FROM torpor_sessions WHERE id = ? AND incarnation = ?", (key, wanted)
        ).fetchone()
        if found is None:
            return [], False, cancelled(conn, key, wanted)
        rows = conn.execute(
            "DELETE FROM torpor_mail WHERE seq IN (SELECT seq FROM torpor_mail "
            "WHERE session = ? AND incarnation = ? ORDER BY lane, seq LIMIT ?) "
            "RETURNING lane, seq, body",
            (found[0], wanted, limit),
        ).fetchall()
        self._refuse_if_closing()  # taken by a closed manager: leave them queued
        rows.sort()  # RETURNING's order is SQLite's choice: lanes, then FIFO
        return [body for _lane, _seq, body in rows], True, False

    def _refuse_if_closing(self) -> None:
        if self._closing():
            raise ManagerClosed("the manager was closed; this mailbox change was not applied")


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def _look(conn: sqlite3.Connection, key: bytes, wanted: int) -> tuple[bool, bool, bool]:
    """(alive, messages queued, cancelled) for that incarnation."""
    found = conn.execute(_LOOK, (key, wanted)).fetchone()
    if found is None:
        return False, False, cancelled(conn, key, wanted)
    return True, bool(found[1]), False
