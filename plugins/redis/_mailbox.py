"""The redis backend's mailbox, shared by every process and host on the server.

Each incarnation of a session has its own keys in the session's bucket (``_keys.py``):
``mp`` and ``mn``, the priority and normal lanes (lists, FIFO); ``mq``, how many
receivers are blocked on it; ``mw``, the wake-ups of an ended incarnation; ``mc``, the
mark of a cancelled one.  The server-side steps are in ``_mailbox_lua.py``; every one
checks first that the session's record still holds the incarnation (in its head), so nothing is
sent to or taken from a dead one.  The commit script ends an incarnation's mail in the
step that removes (or replaces) its record: it deletes both lanes, pushes the reason
onto ``mw`` once per counted receiver, deletes ``mq`` and, for a cancel, sets ``mc``.

A receive that finds nothing waits in slices of :data:`SLICE_S`:

1. ``take`` (mode ``j``): check the incarnation, pop what is queued, else join ``mq``
   (INCR, with a TTL of :data:`COUNT_TTL_MS`) in the same step, so that a removal
   committed afterwards pushes a wake-up for this receiver.
2. ``BLMPOP`` over ``mp``, ``mn``, ``mw``, one element, for one slice, on a connection
   of the blocking client held for the slice.  A message: the rest of the batch is
   taken with ``take`` (mode ``l``, which also leaves ``mq``).  A wake-up: the
   incarnation ended; its reason says ``SessionCancelled`` or ``SessionNotFound``.
3. Nothing: ``take`` (mode ``r``) re-checks the incarnation (a receiver whose wake-up
   went missing still learns of the end within a slice), takes what came, or
   refreshes the TTL of ``mq``; then the next slice.

The count in ``mq`` may be off by a receiver (a process killed while registered, or
a refresh that came after the TTL): one too many leaves a wake-up nobody pops, which
expires with ``mw``; one too few costs one receiver up to a slice.  The TTL drops a
killed receiver's count within a second once no live receiver refreshes it.

Delivery is exactly once while connections hold.  When one breaks mid-call, the
blocking pop is never resent: it runs on a connection taken straight from the blocking
client's pool, outside redis-py's retries, because a resent pop whose first reply was
lost (the server popped a message, the client never read it) would take a second
message after dropping the first.  That message is lost, and the receiver gets
``BackendUnavailable``.  The other steps run through the main client, which resends a
call after a connection error.  A ``take`` whose reply was lost loses what it took
(the resent one takes what comes next); a resent ``send`` finds its token and answers
as the first one did, so a message is never queued twice.  So under connection loss
every message is received at most once, never twice.

A receiver holds a blocking connection only during a slice.  With more receivers
blocked than the blocking pool has connections, the others wait for one (up to the
pool's timeout, then they check the incarnation and wait again): they take turns.

A client whose ``socket_timeout`` is under half a second (a user's ``client=``) cannot
block safely (a server ends a pop only on its next tick, up to 100 ms late): its
receivers poll, a look every 20 ms.

``close()`` wakes this process's blocked receivers at once with ``CLIENT UNBLOCK``
(their pop returns as if timed out, so no message is lost to the wake-up) when the
user may run it; otherwise, within a slice.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Final, Protocol

import redis
from redis.cluster import RedisCluster

from torpor import closed_while_waiting, gone_while_waiting
from torpor.errors import ConfigError, TorporError
from torpor.plugins.redis._items import packed
from torpor.plugins.redis._keys import Keys

__all__ = ["COUNT_TTL_MS", "SLICE_S", "MailboxHost", "RedisMailbox"]

SLICE_S: Final = 0.2
"""The longest one blocking pop waits: what a missed wake-up or a ``close()`` without
``CLIENT UNBLOCK`` costs at most."""
COUNT_TTL_MS: Final = 1000
"""How long a receiver's count in ``mq`` lasts without being refreshed (each slice)."""

_ALIVE: Final = 1
_MIN_BLOCKING_READ: Final = 0.5  # seconds of socket timeout a blocking pop needs
_POLL_S: Final = 0.02  # between looks when the client cannot block (see _pop_on)
_MAX_TAKE: Final = 1 << 20  # Lua counts in doubles: 2**63 would print as 9.2e+18
_CANCELLED: Final = 2


class _Steps(Protocol):
    def call(
        self,
        name: str,
        keys: Sequence[bytes],
        args: Sequence[bytes | str],
        client: Any = None,
    ) -> Any: ...


class MailboxHost(Protocol):
    """What the mailbox uses of the backend (``RedisBackend`` provides it)."""

    @property
    def client(self) -> Any:
        """The main client (``ManagerClosed`` once the backend is closed)."""

    @property
    def keys(self) -> Keys: ...

    @property
    def scripts(self) -> _Steps: ...

    def translated(self) -> AbstractContextManager[None]:
        """Turns redis-py's exceptions raised inside into torpor's."""

    def blocking_client(self) -> Any:
        """A client with pools of its own, whose connections never retry a command."""

    def run(self, step: str, keys: list[bytes], args: list[bytes | str]) -> Any:
        """A writing step, followed by WAIT when the backend has ``wait_replicas``."""


@dataclass(frozen=True, slots=True)
class _Box:
    """The keys of one incarnation's mailbox."""

    member: bytes
    incarnation: bytes
    record: bytes  # its head holds the incarnation
    mp: bytes
    mn: bytes
    mq: bytes
    mw: bytes
    mc: bytes
    mailed: bytes  # the bucket's set of ids that may have mail


@dataclass(frozen=True, slots=True)
class _Blocked:
    """A connection blocked in a pop: its id on the server, and which server."""

    client_id: int
    host: str | None
    port: int | None


class RedisMailbox:
    """The ``torpor.Mailbox`` of the redis backend (see the module docstring)."""

    def __init__(self, host: MailboxHost) -> None:
        self._host = host
        self._lock = threading.Lock()
        self._waiting: dict[str, int] = {}  # session id -> receivers counted in mq
        self._blocked: dict[object, _Blocked] = {}
        self._closed = threading.Event()
        self._can_unblock = True  # until the server says NOPERM

    # -- the protocol ----------------------------------------------------------------
    def send(self, session_id: str, incarnation: int, message: bytes, priority: bool) -> bool:
        box = self._box(session_id, incarnation)
        lane = box.mp if priority else box.mn
        token = self._host.keys.bucket_of(box.member).token(secrets.token_hex(12))
        with self._host.translated():
            sent = self._host.run(
                "send",
                [box.record, lane, token, box.mailed],
                [box.member, box.incarnation, message],
            )
        return bool(sent)

    def receive(
        self, session_id: str, incarnation: int, max_messages: int, timeout: float
    ) -> list[bytes]:
        if self._closed.is_set():
            raise closed_while_waiting(session_id)
        box = self._box(session_id, incarnation)
        if timeout <= 0:
            status, taken, _ = self._take(box, max_messages, "n")
            if status != _ALIVE:
                raise gone_while_waiting(session_id, status == _CANCELLED)
            return taken
        deadline = time.monotonic() + timeout
        status, taken, _ = self._take(box, max_messages, "j")
        if taken:
            return taken
        if status != _ALIVE:
            raise gone_while_waiting(session_id, status == _CANCELLED)
        with self._lock:
            self._waiting[session_id] = self._waiting.get(session_id, 0) + 1
        registered = True  # counted in mq: leave it on the way out
        try:
            while True:
                if self._closed.is_set():
                    raise closed_while_waiting(session_id)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                popped = self._pop(box, min(remaining, SLICE_S))
                if popped is not None:
                    key, first = popped
                    registered = False  # the removal deleted mq; the fill leaves it
                    if key == box.mw:
                        raise gone_while_waiting(session_id, first == b"cancelled")
                    return self._fill(box, key, first, max_messages)
                if self._closed.is_set():
                    raise closed_while_waiting(session_id)
                status, taken, _ = self._take(box, max_messages, "r")
                if taken or status != _ALIVE:
                    registered = False
                if taken:
                    return taken
                if status != _ALIVE:
                    raise gone_while_waiting(session_id, status == _CANCELLED)
        finally:
            with self._lock:
                left = self._waiting[session_id] - 1
                if left:
                    self._waiting[session_id] = left
                else:
                    del self._waiting[session_id]
            if registered:
                self._leave(box)

    def pending(self, session_id: str, incarnation: int) -> int:
        box = self._box(session_id, incarnation)
        with self._host.translated():
            count = self._host.scripts.call(
                "pending", [box.record, box.mp, box.mn], [box.member, box.incarnation]
            )
        return int(count)

    def waiters(self, session_id: str) -> int:
        with self._lock:
            return self._waiting.get(session_id, 0)

    def close(self) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            blocked = list(self._blocked.values())
        for entry in blocked:
            self._unblock(entry)

    # -- steps -----------------------------------------------------------------------
    def _box(self, session_id: str, incarnation: int) -> _Box:
        member = session_id.encode("utf-8")
        bucket = self._host.keys.bucket_of(member)

        def lane(name: str) -> bytes:
            return bucket.mail(name, incarnation, member)

        return _Box(
            member, packed(incarnation), bucket.record(member),
            lane("mp"), lane("mn"), lane("mq"), lane("mw"), lane("mc"), bucket.mailed,
        )  # fmt: skip

    def _take(self, box: _Box, count: int, mode: str) -> tuple[int, list[bytes], int]:
        """(status, messages taken, how many of them from the priority lane)."""
        with self._host.translated():
            reply = self._host.run(
                "take",
                [box.record, box.mp, box.mn, box.mq, box.mc, box.mailed],
                [box.member, box.incarnation, str(min(count, _MAX_TAKE)), mode, str(COUNT_TTL_MS)],
            )
        return int(reply[0]), list(reply[2:]), int(reply[1])

    def _fill(self, box: _Box, key: bytes, first: bytes, max_messages: int) -> list[bytes]:
        """``first`` was popped from lane ``key``: take the rest of the batch and leave
        ``mq``.  Priority messages stay first: one that came after a normal ``first``
        goes before it."""
        try:
            _, more, priority = self._take(box, max_messages - 1, "l")
        except TorporError:
            # Taken messages are never lost to an error; a count left in mq lapses.
            return [first]
        if key == box.mp:
            return [first, *more]
        return [*more[:priority], first, *more[priority:]]

    def _leave(self, box: _Box) -> None:
        """Best effort: on an error the count lapses with its TTL instead."""
        try:
            with self._host.translated():
                self._host.scripts.call("leave", [box.mq], [])
        except TorporError:
            pass

    # -- the blocking pop ------------------------------------------------------------
    def _pop(self, box: _Box, seconds: float) -> tuple[bytes, bytes] | None:
        """One slice of BLMPOP over the lanes and the wake-ups: (key, element), or
        None when the slice ended with nothing (or could not start: no free
        connection, a Cluster slot that moved)."""
        with self._host.translated():
            client = self._host.blocking_client()
            try:
                return self._pop_on(client, box, seconds)
            except (redis.exceptions.MovedError, redis.exceptions.AskError) as exc:
                # The slot moved, or is moving: re-read the map and wait out the slice
                # (a migration can last a while: no busy loop meanwhile).  The takes go
                # through the main client, which follows the move.
                if isinstance(exc, redis.exceptions.MovedError):
                    client.nodes_manager.initialize()
                self._closed.wait(seconds)
                return None
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                # On a Cluster the node may be gone for good (a failover): only a MOVED
                # makes redis-py re-read the map, and a dead node sends none.  Re-read
                # it (this raises if no node answers) and pop again on the next slice.
                if not _is_cluster(client):
                    raise
                client.nodes_manager.initialize()
                return None

    def _pop_on(self, client: Any, box: _Box, seconds: float) -> tuple[bytes, bytes] | None:
        if _is_cluster(client):
            node = client.get_node_from_key(box.mp)
            pool = client.get_redis_connection(node).connection_pool
        else:
            pool = client.connection_pool
        connection = _connection(pool)
        if connection is None:
            return None
        # A user's client may read with a short socket timeout.  A server ends a
        # blocking pop only on its next timer tick (hz 10: up to 100 ms late), so below
        # _MIN_BLOCKING_READ a pop could outlast the read: poll instead (the next take
        # checks the lanes), sleeping a little between looks.
        limit = getattr(connection, "socket_timeout", None)
        if limit is not None and limit < _MIN_BLOCKING_READ:
            pool.release(connection)
            self._closed.wait(min(seconds, _POLL_S))
            return None
        # Never below 1 ms: Redis reads a timeout that rounds to 0 as "block forever".
        command = ("BLMPOP", f"{max(seconds, 0.001):.3f}", 3, box.mp, box.mn, box.mw,
                   "LEFT", "COUNT", 1)  # fmt: skip
        token = object()
        try:
            if self._can_unblock:
                connection.send_packed_command(
                    connection.pack_commands([("CLIENT", "ID"), command])
                )
                self._track(token, connection)
            else:
                connection.send_command(*command)
            reply = connection.read_response()
        except BaseException:
            # The connection may hold a reply nobody read: it must not be reused.
            connection.disconnect()
            raise
        finally:
            with self._lock:
                self._blocked.pop(token, None)
            pool.release(connection)
        if reply is None:
            return None
        key, elements = reply
        return bytes(key), bytes(elements[0])

    def _track(self, token: object, connection: Any) -> None:
        """Read the reply of CLIENT ID and note the connection as blocked, so that
        ``close()`` can unblock it; if ``close()`` already ran, unblock it now."""
        try:
            client_id = int(connection.read_response())
        except redis.exceptions.ResponseError:
            self._can_unblock = False  # not permitted: close() waits out the slice
            return
        entry = _Blocked(
            client_id, getattr(connection, "host", None), getattr(connection, "port", None)
        )
        with self._lock:
            closed = self._closed.is_set()
            if not closed:
                self._blocked[token] = entry
        if closed:
            self._unblock(entry)

    def _unblock(self, entry: _Blocked) -> None:
        """Best effort (close() must not fail): the pop ends within a slice anyway."""
        if not self._can_unblock:
            return
        try:
            with self._host.translated():
                client = self._host.client
                if _is_cluster(client):
                    node = client.get_node(host=entry.host, port=entry.port)
                    if node is not None:
                        client.execute_command(
                            "CLIENT", "UNBLOCK", entry.client_id, target_nodes=node
                        )
                else:
                    client.execute_command("CLIENT", "UNBLOCK", entry.client_id)
        except ConfigError:  # NOPERM: this user may not run CLIENT UNBLOCK
            self._can_unblock = False
        except TorporError:
            pass


def _is_cluster(client: Any) -> bool:
    # A function rather than isinstance() in place: RedisCluster's methods are untyped.
    return isinstance(client, RedisCluster)


def _connection(pool: Any) -> Any:
    """A connection of ``pool``, connected; None if every one is taken (the pool's
    wait ran out): the slice is then spent waiting for a connection instead."""
    try:
        try:
            return pool.get_connection()
        except TypeError:  # redis-py before 5.3 wants a command name
            return pool.get_connection("BLMPOP")
    except redis.exceptions.ConnectionError as exc:
        if "No connection available" in str(exc):
            return None
        raise
