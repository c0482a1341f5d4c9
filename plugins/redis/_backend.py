"""The redis backend: records and their indexes in one Redis namespace.

Key layout in ``_keys.py``; the server-side steps in ``_scripts.py``.  Reads are plain
commands (GET, ZRANGE); every write is one script call that changes the record and
all its index entries together.  ``torpor_transact`` is optimistic: read, run ``fn`` in
Python, then compare-and-set against the SHA-1 of what was read, retrying (boundedly)
when another process wrote in between; threads of this process queue on striped locks
first, so they never make each other retry.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, cast

import redis

from torpor import BackendStats, Capability, Clock, Record, Removal
from torpor.errors import BackendUnavailable, ManagerClosed
from torpor.hookspecs import BatchFn, TransactFn
from torpor.plugins.redis._config import check_server
from torpor.plugins.redis._errors import translated
from torpor.plugins.redis._keys import Keys
from torpor.plugins.redis._locks import StripedLocks
from torpor.plugins.redis._scripts import Scripts

__all__ = ["CAPABILITIES", "RedisBackend"]

CAPABILITIES: frozenset[Capability] = frozenset(
    {
        Capability.PERSISTENT,
        Capability.MULTI_PROCESS,
        Capability.ATOMIC_UPDATE,
        Capability.NATIVE_ITERATION,
        Capability.NATIVE_HIBERNATION,
        Capability.NATIVE_EXPIRY,
    }
)
"""What every RedisBackend claims; also its factory's static metadata."""

_MAX_ATTEMPTS: Final = 200
_MAX_SCORE: Final = 1 << 53  # doubles are exact up to here; later deadlines never come
_IDS_BATCH: Final = 1000
Pair = tuple[str | bytes, bytes]


class RedisBackend:
    """See the package docstring; build it with ``torpor.open("redis", url=...)``."""

    name = "redis"

    def __init__(
        self,
        client: redis.Redis,
        *,
        namespace: str,
        where: str,
        owns_client: bool,
        touch_resolution_ms: int,
    ) -> None:
        self._where = where
        self._owns_client = owns_client
        self._touch_resolution = touch_resolution_ms
        self._keys = Keys(namespace)
        self._locks = StripedLocks()
        self._closing = threading.Lock()
        with translated(where):
            info = {**client.info("server"), **client.info("memory")}
            check_server(info, where)
            self._scripts = Scripts(client)
        self._client: redis.Redis | None = client

    def __repr__(self) -> str:
        return f"RedisBackend({self._where}, namespace={self._keys.namespace!r})"

    @property
    def client(self) -> redis.Redis:
        client = self._client
        if client is None:
            raise ManagerClosed("this redis backend is closed; open a new manager")
        return client

    # -- lifecycle ---------------------------------------------------------------
    def torpor_capabilities(self) -> Iterable[Capability]:
        return CAPABILITIES

    def torpor_open(self, clock: Clock, options: Mapping[str, Any]) -> None:
        """Nothing to prepare: the checks ran when the backend was built."""

    def torpor_touch_resolution_ms(self) -> int:
        return self._touch_resolution

    def torpor_close(self, urgent: bool) -> None:
        """Idempotent.  A client given by the user stays open: it is theirs."""
        with self._closing:
            client, self._client = self._client, None
        if client is not None and self._owns_client:
            client.close()
            client.connection_pool.disconnect()

    # -- required data hooks -----------------------------------------------------
    def torpor_fetch(self, session_id: str) -> bytes | None:
        with translated(self._where):
            value = self.client.get(self._keys.record(_member(session_id)))
        return cast("bytes | None", value)  # responses are bytes: decode_responses is off

    def torpor_store(self, record: Record) -> None:
        self._commit([_item(record.id, None, record, unconditional=True)])

    def torpor_delete(self, session_id: str) -> bool:
        return self._commit([_item(session_id, None, _GONE, unconditional=True)]) > 0

    def torpor_ids(self) -> Iterator[str | bytes]:
        for batch in self._id_batches():
            yield from (_key(m) for m in batch)

    # -- native hooks ------------------------------------------------------------
    def torpor_transact(self, session_id: str, fn: TransactFn) -> None:
        self._transact([session_id], lambda sid, value: fn(value))

    def torpor_transact_batch(self, session_ids: Sequence[str], fn: BatchFn) -> None:
        self._transact(session_ids, fn)

    def torpor_iterate(self, cursor: Any, batch_size: int) -> tuple[list[Pair], Any]:
        start = b"-" if cursor is None else b"(" + cursor
        keys = self._keys
        with translated(self._where):
            flat = self._scripts.call(
                "page", [keys.ids], [start, str(batch_size), keys.record_prefix]
            )
        items: list[Pair] = []
        for member, value in zip(flat[::2], flat[1::2], strict=True):
            if value is not None:  # an id whose record a foreign writer removed
                items.append((_key(member), value))
        more = len(flat) // 2 >= batch_size
        return items, (flat[-2] if more and flat else None)

    def torpor_idle_ids(self, cutoff_ms: int, limit: int) -> list[str]:
        return self._below(self._keys.idle, cutoff_ms, limit)

    def torpor_expired_ids(self, now_ms: int, limit: int) -> list[str]:
        return self._below(self._keys.expiry, now_ms, limit)

    def torpor_stats(self) -> BackendStats:
        """The server's own accounting of this namespace's keys, a batch of pipelined
        MEMORY USAGE calls at a time (SAMPLES 0: every element of the index sets)."""
        keys = self._keys
        total = 0
        with translated(self._where):
            pipe = self.client.pipeline(transaction=False)
            for index in keys.indexes:
                pipe.memory_usage(index, samples=0)
            total += sum(n or 0 for n in pipe.execute())
            for batch in self._id_batches():
                pipe = self.client.pipeline(transaction=False)
                for member in batch:
                    pipe.memory_usage(keys.record(member), samples=0)
                total += sum(n or 0 for n in pipe.execute())
            evicted = self.client.info("stats").get("evicted_keys", 0)
        # An evicting server drops sessions silently: say so wherever figures are read.
        return BackendStats(
            total,
            "sum of the server's MEMORY USAGE of the namespace's keys; the server has "
            f"evicted {evicted} keys since it started",
        )

    # -- the conformance kit -----------------------------------------------------
    def conformance_plant(self, key: bytes, value: bytes) -> None:
        """Write ``value`` as the record of ``key`` and list ``key`` among the ids, as a
        foreign program writing into the namespace would: no idle or expiry entry."""
        keys = self._keys
        with translated(self._where):
            pipe = self.client.pipeline(transaction=True)
            pipe.set(keys.record(key), value)
            pipe.zadd(keys.ids, {key: 0})
            pipe.execute()

    # -- internals ---------------------------------------------------------------
    def _id_batches(self) -> Iterator[list[bytes]]:
        """The id set in batches, one short ZRANGE BYLEX each (never KEYS)."""
        start = b"-"
        while True:
            with translated(self._where):
                batch = cast(
                    "list[bytes]",
                    self.client.zrange(
                        self._keys.ids, start, b"+", bylex=True, offset=0, num=_IDS_BATCH
                    ),
                )
            if batch:
                yield batch
            if len(batch) < _IDS_BATCH:
                return
            start = b"(" + batch[-1]

    def _below(self, index: bytes, bound: int, limit: int) -> list[str]:
        if limit <= 0:
            return []
        with translated(self._where):
            found = cast(
                "list[bytes]",
                self.client.zrange(
                    index, b"-inf", f"({min(bound, _MAX_SCORE)}", byscore=True, offset=0, num=limit
                ),
            )
        return [m.decode("utf-8") for m in found]  # only stores index ids: all valid

    def _transact(self, session_ids: Sequence[str], fn: BatchFn) -> None:
        keys = self._keys
        records = [keys.record(_member(sid)) for sid in session_ids]
        with self._locks.holding(session_ids):
            for attempt in range(_MAX_ATTEMPTS):
                with translated(self._where):
                    values = cast(
                        "list[bytes | None]", self.client.mget(records) if records else []
                    )
                items = []
                for sid, value in zip(session_ids, values, strict=True):
                    result = fn(sid, value)
                    if result is not None:
                        items.append(_item(sid, value, result))
                if not items or self._commit(items, token=secrets.token_hex(12)) >= 0:
                    return
                # Another process wrote in between: back off a little, jittered, so
                # that two writers do not collide again in lockstep.
                time.sleep(random.uniform(0, min(0.001 * (attempt + 1), 0.05)))
        raise BackendUnavailable(
            f"redis at {self._where}: {_MAX_ATTEMPTS} attempts at an atomic update of "
            f"{len(session_ids)} session(s) all met a concurrent write; try again"
        )

    def _commit(self, items: list[tuple[bytes, list[bytes | str]]], token: str = "") -> int:
        """Apply ``items`` in one step; the number of records removed, or -1 if one
        of them changed since it was read (nothing is applied then).  ``token`` makes
        a conditional commit safe to resend (see ``_scripts.py``)."""
        keys = [
            *self._keys.indexes,
            self._keys.token(token),
            *(self._keys.record(member) for member, _ in items),
        ]
        args = [token, *(arg for _, fields in items for arg in fields)]
        with translated(self._where):
            ok, removed = self._scripts.call("commit", keys, args)
        return int(removed) if ok else -1


_GONE: Final = object()


def _item(
    session_id: str, read: bytes | None, result: object, *, unconditional: bool = False
) -> tuple[bytes, list[bytes | str]]:
    member = _member(session_id)
    expected = "*" if unconditional else ("" if read is None else _sha(read))
    if isinstance(result, Record):
        blob = result.blob
        idle = "" if result.hibernated else str(result.last_accessed)
        deadline = result.expires_at()
        expiry = "" if deadline is None else str(min(deadline, _MAX_SCORE))
        return member, [member, expected, "S", blob, idle, expiry]
    if result is _GONE or isinstance(result, Removal):
        return member, [member, expected, "D", b"", "", ""]
    raise TypeError(f"a transaction function returned {type(result).__name__}")


def _sha(value: bytes) -> str:
    return hashlib.sha1(value, usedforsecurity=False).hexdigest()


def _member(session_id: str) -> bytes:
    return session_id.encode("utf-8")


def _key(member: bytes) -> str | bytes:
    """A stored id as ``torpor_ids`` gives it: bytes when not valid UTF-8."""
    try:
        return member.decode("utf-8")
    except UnicodeDecodeError:
        return member
