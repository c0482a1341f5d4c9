"""The redis backend: records, their indexes and their mail in one Redis namespace.

Key layout in ``_keys.py`` (a namespace is split into buckets, one hash tag each); the
server-side steps in ``_scripts.py``.  Reads are plain commands (GET, ZRANGE); every
write is one script call that changes the records, their index entries and their mail
together, inside one bucket.  ``torpor_transact`` is optimistic: read, run ``fn`` in
Python, then compare-and-set against the SHA-1 of what was read, retrying (boundedly)
when another process wrote in between; threads of this process queue on striped locks
first, so they never make each other retry.

A batch (``torpor_transact_batch``) is atomic within a bucket: on a Cluster, a batch
over several buckets is decided whole (``fn`` runs for every id before anything is
written, so an exception from it writes nothing), then committed bucket by bucket;
another client may see one bucket's part before the next one's, and when a later
bucket met a concurrent write and ``fn``, run again for it, raises, the earlier
buckets stay applied (no Redis commit spans two slots; docs/guide.md says so).
"""

from __future__ import annotations

import heapq
import itertools
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Final, cast

import redis
from redis.cluster import RedisCluster

from torpor import BackendStats, Capability, Clock, Record
from torpor.errors import BackendUnavailable, ConfigError, ManagerClosed, SerializationError
from torpor.hookspecs import BatchFn, Expired, TransactFn
from torpor.indexing import index_entry
from torpor.plugins.redis._config import check_server
from torpor.plugins.redis._dictionary import shared_dictionary
from torpor.plugins.redis._errors import ERRORS, translate, translated
from torpor.plugins.redis._items import (
    GONE,
    KEEP,
    MAX_SCORE,
    Item,
    entries_of,
    item,
    member,
    packed,
    same_data,
    unwrap,
)
from torpor.plugins.redis._keys import Bucket, Keys
from torpor.plugins.redis._locks import StripedLocks
from torpor.plugins.redis._mailbox import RedisMailbox
from torpor.plugins.redis._scripts import Scripts
from torpor.plugins.redis._stats import METHOD, namespace_memory

__all__ = ["CAPABILITIES", "RedisBackend"]

CAPABILITIES: frozenset[Capability] = frozenset(
    {
        Capability.PERSISTENT,
        Capability.MULTI_PROCESS,
        Capability.ATOMIC_UPDATE,
        Capability.NATIVE_ITERATION,
        Capability.NATIVE_HIBERNATION,
        Capability.NATIVE_EXPIRY,
        Capability.SECONDARY_INDEX,
        Capability.SHARED_MAILBOX,
        Capability.DISTRIBUTED,
    }
)
"""What every RedisBackend claims; also its factory's static metadata."""

CLUSTER_BUCKETS: Final = 16
_MAX_ATTEMPTS: Final = 200
_IDS_BATCH: Final = 1000
_MAX_BATCH: Final = 1 << 20
"""Batches asked for are cut to this: the server-side steps count in doubles, and
fewer than asked is allowed (a walk goes on, a sweep asks again)."""
_DEFAULT_LIMIT: Final = 1 << 20  # max_session_bytes until torpor_open says otherwise
Pair = tuple[str | bytes, bytes]
Client = redis.Redis | RedisCluster


class _StaleFields(Exception):
    """A commit computed index entries for fields that changed meanwhile."""


class RedisBackend:
    """See the package docstring; build it with ``torpor.open("redis", url=...)``."""

    name = "redis"

    def __init__(
        self,
        client: Client,
        *,
        namespace: str,
        where: str,
        owns_client: bool,
        touch_resolution_ms: int,
        buckets: int | None = None,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        blocking: Client | None = None,
    ) -> None:
        self.where = where
        self._owns_client = owns_client
        self._touch_resolution = touch_resolution_ms
        self._wait = (wait_replicas, wait_timeout_ms)
        self._blocking = blocking
        self._cluster = isinstance(client, RedisCluster)
        self._locks = StripedLocks()
        self._closing = threading.Lock()
        self._fields_lock = threading.Lock()
        self.limit = _DEFAULT_LIMIT
        with translated(where):
            for info in _infos(client, "server", "memory"):
                check_server(info, where, cluster=self._cluster)
            count = self._bucket_count(client, Keys(namespace), buckets)
            self.keys = Keys(namespace, count)
            self.scripts = Scripts(client, current=lambda: self.client)
        # bucket index -> (fields version, indexed fields), as last read from it
        self._fields: dict[int, tuple[str, tuple[str, ...]]] = {}
        self._client: Client | None = client

    def __repr__(self) -> str:
        return (
            f"RedisBackend({self.where}, namespace={self.keys.namespace!r}, "
            f"buckets={self.keys.count})"
        )

    @property
    def client(self) -> Client:
        client = self._client
        if client is None:
            raise ManagerClosed("this redis backend is closed; open a new manager")
        return client

    def blocking_client(self) -> Client:
        """The client a blocking pop may hold a connection of (its own pool)."""
        self.client  # noqa: B018  (raises once closed)
        return self._blocking if self._blocking is not None else self.client

    def translated(self) -> AbstractContextManager[None]:
        return translated(self.where)

    # -- lifecycle ---------------------------------------------------------------
    def torpor_capabilities(self) -> Iterable[Capability]:
        return CAPABILITIES

    def torpor_open(self, clock: Clock, options: Mapping[str, Any]) -> None:
        self.limit = int(options.get("max_session_bytes") or _DEFAULT_LIMIT)

    def torpor_touch_resolution_ms(self) -> int:
        return self._touch_resolution

    def torpor_close(self, urgent: bool) -> None:
        """Idempotent.  A client given by the user stays open: it is theirs."""
        with self._closing:
            client, self._client = self._client, None
        if client is not None and self._owns_client:
            for owned in (client, self._blocking):
                if owned is not None:
                    _release(owned)

    # -- required data hooks -----------------------------------------------------
    def torpor_fetch(self, session_id: str) -> bytes | None:
        value = self._get(self.keys.record(member(session_id)))
        return None if value is None else unwrap(value)

    def torpor_store(self, record: Record) -> None:
        bucket = self.keys.bucket_of(member(record.id))
        self._committing(
            bucket,
            lambda fields: [item(record.id, None, record, self._entries(fields, record),
                                 unconditional=True)],
        )  # fmt: skip

    def torpor_delete(self, session_id: str) -> bool:
        bucket = self.keys.bucket_of(member(session_id))
        removed = self._committing(
            bucket, lambda fields: [item(session_id, None, GONE, "", unconditional=True)]
        )
        return removed > 0

    def torpor_ids(self) -> Iterator[str | bytes]:
        for bucket in self.keys.buckets:
            for batch in self._id_batches(bucket):
                yield from (_key(m) for m in batch)

    # -- native hooks ------------------------------------------------------------
    def torpor_transact(self, session_id: str, fn: TransactFn) -> None:
        self._transact([session_id], lambda sid, value: fn(value))

    def torpor_transact_batch(self, session_ids: Sequence[str], fn: BatchFn) -> None:
        self._transact(session_ids, fn)

    def torpor_iterate(self, cursor: Any, batch_size: int) -> tuple[list[Pair], Any]:
        batch_size = min(batch_size, _MAX_BATCH)
        index, start = _resume(cursor)
        bucket = self.keys.buckets[index]
        with translated(self.where):
            flat = self.scripts.call(
                "page", [bucket.ids], [start, str(batch_size), bucket.record_prefix]
            )
        items: list[Pair] = []
        for key, value in zip(flat[::2], flat[1::2], strict=True):
            if value is not None:  # an id whose record a foreign writer removed
                items.append((_key(key), unwrap(value)))
        last = flat[-2] if len(flat) // 2 >= batch_size and flat else None
        return items, self._next(index, last)

    def torpor_iterate_ids(
        self, cursor: Any, batch_size: int, now_ms: int
    ) -> tuple[list[str | bytes], Any]:
        batch_size = min(batch_size, _MAX_BATCH)
        index, start = _resume(cursor)
        bucket = self.keys.buckets[index]
        with translated(self.where):
            out = self.scripts.call(
                "page_ids",
                [bucket.ids, bucket.expiry],
                [start, str(batch_size), bucket.record_prefix, str(now_ms)],
            )
        split = out.index(b"", 1)  # ids are never empty: the end of the proved ones
        kept: list[str | bytes] = [_key(m) for m in out[1:split]]
        for key, value in zip(out[split + 1 :: 2], out[split + 2 :: 2], strict=True):
            if _intact(value, key, self.limit, now_ms):
                kept.append(_key(key))
        return kept, self._next(index, out[0] or None)

    def torpor_idle_ids(self, cutoff_ms: int, limit: int) -> list[str]:
        return self._below("idle", cutoff_ms, limit)

    def torpor_expired_ids(self, now_ms: int, limit: int) -> list[str]:
        return self._below("expiry", now_ms, limit)

    def torpor_expire(self, now_ms: int, batch_size: int) -> Iterator[Expired]:
        """Each bucket's due records removed server-side, a batch per step (see
        ``expire`` in ``_scripts.py``): only ids come back, never the records."""
        # At most 1,000 a step: a step blocks the server while it runs (~5 ms here).
        limit = min(max(batch_size, 1), _IDS_BATCH)
        now = str(min(now_ms, MAX_SCORE))
        for bucket in self.keys.buckets:
            keys = [bucket.ids, bucket.idle, bucket.expiry, bucket.entries]
            # Damaged entries stay at the front of exp: each step looks past as many
            # as the last one met (counted again each time, so one that went away
            # meanwhile hides no due session).
            skip = 0
            while True:
                with translated(self.where):
                    out = self.run("expire", keys, [bucket.prefix, now, str(limit), str(skip)])
                damaged = [_key(m) for m in out[2:]]
                if out[1] or damaged:
                    yield Expired(int(out[1]), (), damaged)
                if int(out[0]) < limit + skip:
                    break
                skip = len(damaged)

    def torpor_find(self, criteria: Mapping[str, Any]) -> list[Pair] | None:
        args: list[bytes | str] = []
        for field, value in criteria.items():
            try:
                args += [_field(field), index_entry(field, value).hex()]
            except (TypeError, ValueError):
                continue  # no session can hold such a value: let the manager compare
        if not args:
            return None
        found: list[Pair] = []
        with translated(self.where):
            for bucket in self.keys.buckets:
                out = self.scripts.call(
                    "find", [bucket.fields], [bucket.prefix, bucket.record_prefix, *args]
                )
                if out[0] == 0:
                    return None  # not (yet) indexed everywhere: the manager scans
                found += [(_key(k), unwrap(v)) for k, v in zip(out[1::2], out[2::2], strict=True)]
        return found

    def torpor_create_index(self, field: str) -> None:
        """Mark ``field`` in every bucket (writers index it from then on), backfill what
        is stored, then mark it ready: ``find`` answers through it only once it is
        ready in every bucket, and scans until then."""
        name = _field(field)
        with translated(self.where):
            states = [self.client.hget(b.fields, name) for b in self.keys.buckets]
            if all(s == b"ready" for s in states):
                return
            for bucket, state in zip(self.keys.buckets, states, strict=True):
                if state is None:
                    # A fresh random version, never a counter: a server restarted
                    # without persistence must not give an old version a new meaning.
                    pipe = self.client.pipeline(transaction=True)
                    pipe.hsetnx(bucket.fields, name, "building")
                    pipe.hset(bucket.fields, "~version", secrets.token_hex(8))
                    pipe.execute()
            for bucket in self.keys.buckets:
                self._backfill(bucket)
                self.client.hset(bucket.fields, name, "ready")

    def torpor_shared_dictionary(self, proposal: bytes | None) -> bytes | None:
        """The namespace's zstd dictionary, at ``torpor:{ns}:dict`` (``_dictionary.py``)."""
        return shared_dictionary(self.client, self.keys, self.where, proposal)

    def torpor_mailbox(self) -> RedisMailbox:
        return RedisMailbox(self)

    def torpor_stats(self) -> BackendStats:
        """The server's own accounting of this namespace's keys (``_stats.py``)."""
        with translated(self.where):
            total = namespace_memory(self.client, self.keys)
            evicted = sum(int(i.get("evicted_keys", 0)) for i in _infos(self.client, "stats"))
        # An evicting server drops sessions silently: say so wherever figures are read.
        return BackendStats(
            total, f"{METHOD}; the server has evicted {evicted} keys since it started"
        )

    # -- the conformance kit -----------------------------------------------------
    def conformance_plant(self, key: bytes, value: bytes) -> None:
        """Write ``value`` as the record of ``key`` and list ``key`` among the ids, as a
        foreign program writing into the namespace would: no idle, expiry or index
        entry, and no incarnation."""
        bucket = self.keys.bucket_of(key)
        with translated(self.where):
            pipe = self.client.pipeline(transaction=True)
            pipe.set(bucket.record(key), value)
            pipe.zadd(bucket.ids, {key: 0})
            pipe.execute()

    # -- internals ---------------------------------------------------------------
    def _bucket_count(self, client: Client, keys: Keys, wanted: int | None) -> int:
        """The namespace's bucket count: stored at its first open, then fixed."""
        if wanted is not None and wanted != 1 and not self._cluster:
            raise ConfigError("redis buckets= other than 1 needs a Cluster (cluster=True)")
        default = CLUSTER_BUCKETS if self._cluster else 1
        # Written only when missing: a full server refuses any write, and opening must
        # still work there (to delete sessions, say).
        found = client.hget(keys.meta, "buckets")
        if found is None:
            client.hsetnx(keys.meta, "buckets", wanted or default)
            found = client.hget(keys.meta, "buckets")
        try:
            stored = int(cast("bytes", found))
        except (TypeError, ValueError):
            stored = 0
        if stored < 1:
            raise ConfigError(
                f"redis namespace {keys.namespace!r} has a damaged bucket count "
                f"({found!r} in {keys.meta!r}); repair or remove that key"
            )
        if wanted is not None and stored != wanted:
            raise ConfigError(
                f"redis namespace {keys.namespace!r} was created with {stored} buckets; "
                f"it cannot be opened with buckets={wanted} (every session would be "
                "looked for in the wrong place)"
            )
        if stored != 1 and not self._cluster:
            raise ConfigError(
                f"redis namespace {keys.namespace!r} has {stored} buckets: open it on its "
                "Cluster (cluster=True)"
            )
        return stored

    def _next(self, index: int, last: bytes | None) -> tuple[int, bytes] | None:
        """The cursor after a batch of bucket ``index`` that ended at ``last`` (None:
        the bucket is done)."""
        if last is not None:
            return index, last
        if index + 1 < self.keys.count:
            return index + 1, b""
        return None

    def _id_batches(self, bucket: Bucket) -> Iterator[list[bytes]]:
        """A bucket's id set in batches, one short ZRANGE BYLEX each (never KEYS)."""
        start = b"-"
        while True:
            with translated(self.where):
                batch = cast(
                    "list[bytes]",
                    self.client.zrange(
                        bucket.ids, start, b"+", bylex=True, offset=0, num=_IDS_BATCH
                    ),
                )
            if batch:
                yield batch
            if len(batch) < _IDS_BATCH:
                return
            start = b"(" + batch[-1]

    def _below(self, index: str, bound: int, limit: int) -> list[str]:
        """The ``limit`` lowest ids under ``bound`` in index ``index`` over every
        bucket (one pipelined ZRANGE BYSCORE each, merged by score)."""
        if limit <= 0:
            return []
        limit = min(limit, _MAX_BATCH)
        high = f"({min(bound, MAX_SCORE)}"
        buckets = self.keys.buckets
        with translated(self.where):
            if len(buckets) == 1:
                found = cast("list[bytes]", self.client.zrange(
                    getattr(buckets[0], index), b"-inf", high, byscore=True, offset=0, num=limit
                ))  # fmt: skip
                return _session_ids(found)
            pipe = self.client.pipeline(transaction=False)
            for bucket in buckets:
                pipe.zrange(getattr(bucket, index), b"-inf", high, byscore=True,
                            offset=0, num=limit, withscores=True)  # fmt: skip
            replies = cast("list[list[tuple[bytes, float]]]", pipe.execute())
        merged = heapq.merge(*replies, key=lambda pair: pair[1])
        return _session_ids(m for m, _ in itertools.islice(merged, limit))

    def _transact(self, session_ids: Sequence[str], fn: BatchFn) -> None:
        """Read, decide every id with ``fn``, then commit bucket by bucket; a bucket
        that met a concurrent write is read and decided again.  ``fn`` runs for every
        id before anything is committed, so an exception from it commits nothing."""
        pending: dict[int, list[str]] = {}
        for sid in session_ids:
            pending.setdefault(self.keys.bucket_of(member(sid)).index, []).append(sid)
        with self._locks.holding(session_ids):
            for attempt in range(_MAX_ATTEMPTS):
                decisions = [(i, self._decide(self.keys.buckets[i], ids, fn))
                             for i, ids in pending.items()]  # fmt: skip
                for index, decided in decisions:
                    bucket = self.keys.buckets[index]
                    if (
                        not decided
                        or self._committing(
                            bucket, self._items_of(decided), token=secrets.token_hex(12)
                        )
                        >= 0
                    ):
                        del pending[index]
                if not pending:
                    return
                # Another process wrote in between: back off a little, jittered, so
                # that two writers do not collide again in lockstep.
                time.sleep(random.uniform(0, min(0.001 * (attempt + 1), 0.05)))
        raise BackendUnavailable(
            f"redis at {self.where}: {_MAX_ATTEMPTS} attempts at an atomic update of "
            f"{len(session_ids)} session(s) all met a concurrent write; try again"
        )

    def _decide(
        self, bucket: Bucket, session_ids: list[str], fn: BatchFn
    ) -> list[tuple[str, bytes | None, object]]:
        with translated(self.where):
            values = self._mget([bucket.record(member(sid)) for sid in session_ids])
        decided: list[tuple[str, bytes | None, object]] = []
        for sid, value in zip(session_ids, values, strict=True):
            result = fn(sid, None if value is None else unwrap(value))
            if result is not None:
                decided.append((sid, value, result))  # the stored value: its SHA-1 is checked
        return decided

    def _items_of(
        self, decided: Sequence[tuple[str, bytes | None, object]]
    ) -> Callable[[tuple[str, ...]], list[Item]]:
        def items(fields: tuple[str, ...]) -> list[Item]:
            return [
                item(sid, value, result, self._entries(fields, result, value))
                for sid, value, result in decided
            ]

        return items

    def _mget(self, keys: list[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        if len(keys) == 1:
            return [self._get(keys[0])]
        return cast("list[bytes | None]", self.client.mget(keys))  # another type: None

    def _get(self, key: bytes) -> bytes | None:
        """A record key's value; b"" (damaged data) when the key holds another type."""
        try:
            return cast("bytes | None", self.client.get(key))
        except redis.exceptions.ResponseError as exc:
            if str(exc).startswith("WRONGTYPE"):
                return b""
            raise translate(exc, self.where) from exc
        except ERRORS as exc:
            raise translate(exc, self.where) from exc

    def _entries(self, fields: tuple[str, ...], result: object, read: bytes | None = None) -> str:
        if not isinstance(result, Record):
            return ""
        if not fields:
            return ""
        if same_data(read, result):
            return KEEP
        return entries_of(fields, result, self.limit)

    def _committing(
        self, bucket: Bucket, items: Callable[[tuple[str, ...]], list[Item]], token: str = ""
    ) -> int:
        """Commit ``items(fields)`` for the bucket's indexed fields, reading them again
        and recomputing when ``create_index`` changed them meanwhile."""
        for _ in range(_MAX_ATTEMPTS):
            version, fields = self._fields_of(bucket)
            try:
                return self._commit(bucket, version, items(fields), token)
            except _StaleFields:
                with self._fields_lock:
                    self._fields.pop(bucket.index, None)
        raise BackendUnavailable(f"redis at {self.where}: indexed fields keep changing")

    def _fields_of(self, bucket: Bucket) -> tuple[str, tuple[str, ...]]:
        known = self._fields.get(bucket.index)
        if known is not None:
            return known
        with translated(self.where):
            raw = cast("dict[bytes, bytes]", self.client.hgetall(bucket.fields))
        version = raw.pop(b"~version", b"0").decode()
        fields = (f[2:].decode("utf-8", "surrogatepass") for f in raw if f.startswith(b"f:"))
        known = (version, tuple(sorted(fields)))
        with self._fields_lock:
            self._fields[bucket.index] = known
        return known

    def _commit(self, bucket: Bucket, version: str, items: list[Item], token: str) -> int:
        """Apply ``items`` in one step; the number of records removed, or -1 if one
        of them changed since it was read (nothing is applied then).  ``token`` makes
        a conditional commit safe to resend (see ``_scripts.py``)."""
        keys = [*bucket.indexes, bucket.token(token), *(bucket.record(k) for k, _ in items)]
        args = [token, version, bucket.prefix, *(a for _, fields in items for a in fields)]
        # Removals alone run as ``remove`` (the same step, allowed on a full server:
        # they are how a full server is emptied).
        step = "remove" if all(fields[2] == "D" for _, fields in items) else "commit"
        with translated(self.where):
            ok, removed = self.run(step, keys, args)
        if ok == -2:
            raise _StaleFields
        return int(removed) if ok == 1 else -1

    def run(self, step: str, keys: list[bytes], args: list[bytes | str]) -> Any:
        """Run a writing step (``_scripts.py``); with ``wait_replicas``, then WAIT on
        the same connection (WAIT counts the replicas that have the writes of its own
        connection), on the primary of the step's slot (``keys[0]``'s)."""
        replicas, timeout = self._wait
        if replicas <= 0:
            return self.scripts.call(step, keys, args)
        client = self.client
        if isinstance(client, RedisCluster):
            node = client.get_node_from_key(keys[0])  # type: ignore[no-untyped-call]
            client = client.get_redis_connection(node)
        for attempt in (1, 2):
            pipe = client.pipeline(transaction=False)
            self.scripts.call(step, keys, args, client=pipe)
            pipe.wait(replicas, timeout)
            try:
                result, acknowledged = pipe.execute()
                break
            except redis.exceptions.ResponseError as exc:
                # A restarted server lost the library: load it again (see Scripts.call).
                if attempt == 2 or "function not found" not in str(exc).lower():
                    raise
                self.scripts.reload()
        if int(acknowledged) < replicas:
            raise BackendUnavailable(
                f"redis at {self.where}: the write was applied on the primary but only "
                f"{acknowledged} of {replicas} replicas acknowledged it within {timeout} ms; "
                "it may be lost if the primary fails now"
            )
        return result

    def _backfill(self, bucket: Bucket) -> None:
        """Index every record of ``bucket`` for the fields stored there, a page at a
        time; a record written meanwhile was indexed by its writer."""
        cursor: bytes = b"-"
        while True:
            flat = self.scripts.call(
                "page", [bucket.ids], [cursor, str(_IDS_BATCH), bucket.record_prefix]
            )
            pairs = list(zip(flat[::2], flat[1::2], strict=True))
            while True:
                version, fields = self._fields_of(bucket)
                args: list[bytes | str] = [bucket.prefix, version]
                for key, value in pairs:
                    try:
                        record = Record.of(unwrap(value), key.decode("utf-8"))
                    except (SerializationError, UnicodeDecodeError):  # foreign: not indexed
                        continue
                    seen = packed(record.incarnation) + packed(record.version)
                    args += [key, seen, entries_of(fields, record, self.limit)]
                out = self.scripts.call("reindex", [bucket.entries, bucket.fields], args)
                if out[0] != -2:
                    break
                with self._fields_lock:
                    self._fields.pop(bucket.index, None)
            if len(pairs) < _IDS_BATCH:
                return
            cursor = b"(" + pairs[-1][0]


def _session_ids(members: Iterable[bytes]) -> list[str]:
    """Index members as session ids; one that is no UTF-8 (written there by something
    else) is no session torpor could have, and is left out."""
    ids = []
    for m in members:
        try:
            ids.append(m.decode("utf-8"))
        except UnicodeDecodeError:
            continue
    return ids


def _release(client: Client) -> None:
    """Close ``client`` and every connection of its pools: a ``Redis`` built over a pool
    it did not make leaves the pool open on ``close()``, and so do a Cluster's nodes."""
    if isinstance(client, RedisCluster):
        nodes = client.get_nodes()  # type: ignore[no-untyped-call]
        pools = [n.redis_connection.connection_pool for n in nodes if n.redis_connection]
    else:
        pools = [client.connection_pool]
    client.close()
    for pool in pools:
        pool.disconnect()


def _intact(value: bytes, key: bytes, limit: int, now_ms: int) -> bool:
    """What the manager keeps in a walk (``torpor_iterate_ids``), checked as it does:
    for a value torpor did not write here, so it carries no proof."""
    try:
        record = Record.of(value, key.decode("utf-8"))
        record.session_data(limit)
    except (SerializationError, UnicodeDecodeError):
        return False
    return not record.is_expired(now_ms)


def _field(field: str) -> bytes:
    """A field's name in a bucket's ``fields`` hash: apart from ``~version``, and any
    str (lone surrogates too) encodable."""
    return b"f:" + field.encode("utf-8", "surrogatepass")


def _resume(cursor: Any) -> tuple[int, bytes]:
    """(bucket index, ZRANGE start) from a walk cursor."""
    if cursor is None:
        return 0, b"-"
    index, last = cursor
    return index, (b"(" + last if last else b"-")


def _infos(client: Client, *sections: str) -> list[dict[str, Any]]:
    """``INFO`` of every primary: one dict each, the sections merged."""
    merged: dict[str, dict[str, Any]] = {}
    for section in sections:
        if isinstance(client, RedisCluster):
            replies = client.info(section, target_nodes=RedisCluster.PRIMARIES)
            per_node = replies if _per_node(replies) else {"one": replies}
        else:
            per_node = {"one": client.info(section)}
        for node, info in per_node.items():
            merged.setdefault(str(node), {}).update(info)
    return list(merged.values())


def _per_node(replies: Any) -> bool:
    return isinstance(replies, dict) and all(isinstance(v, dict) for v in replies.values())


def _key(key: bytes) -> str | bytes:
    """A stored id as ``torpor_ids`` gives it: bytes when not valid UTF-8."""
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return key
