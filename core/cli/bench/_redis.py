"""redis: raw redis-py with torpor's codec as the floor, a raw pipelined walk and
sweep beside the size-dependent cases, and a namespace of its own for every store.

The server comes from the command's options (``--option url=redis://HOST:PORT``, or
``sentinels=`` with ``service_name=``; ``cluster=true`` for a Cluster).  Every store
the benchmark opens, torpor's or raw, gets a fresh namespace,
``<namespace option or torpor-bench>.<run token>.<n>``, and every key under it is
deleted when the store is done with (SCAN MATCH in batches, never KEYS).

The raw side talks to the server through a client built by torpor's own factory
(same timeouts, retries, pool bounds and protocol), so a ratio compares torpor's code
with redis-py's commands, never two client configurations.  Like a user of raw
redis-py it stores only the encoded data (``torpor.codec.encode_data``), in one hash
tag: no metadata, no incarnations, no index but the two sorted sets a walk and a sweep
need.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, cast

import click

from torpor import codec
from torpor.cli.bench._profiles import Profile
from torpor.cli.bench._runner import Block, Case
from torpor.errors import TorporError

if TYPE_CHECKING:
    from torpor.cli.bench._context import Context
    from torpor.plugins.redis import RedisBackend

__all__ = [
    "PROFILE",
    "RAW_LABEL",
    "RAW_SWEEP",
    "RAW_WALK",
    "Namespace",
    "RedisEngine",
    "raw_sweep_name",
    "raw_walk_name",
    "scaling_raw",
    "scratch",
]

RAW_LABEL = "raw redis-py"
RAW_WALK = "raw pipelined walk"
RAW_SWEEP = "raw pipelined sweep"
NEEDS_SERVER = (
    "bench --backend redis needs a server: --option url=redis://HOST:PORT "
    "(or sentinels=HOST:PORT,... with service_name=NAME)"
)

_RUN = secrets.token_hex(4)  # this process's run: no two runs share a namespace
_SERIAL = itertools.count()
_BATCH = 1000  # keys per pipelined fill and per deletion
# The Lua of the raw update: write only if the value is still the one read.
_CAS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


def raw_walk_name(size: int) -> str:
    return f"{RAW_WALK}, {size:,} sessions"


def raw_sweep_name(size: int) -> str:
    return f"{RAW_SWEEP}, {size:,} sessions"


def _glob(text: bytes) -> bytes:
    """``text`` matched literally by a Redis glob pattern."""
    out = bytearray()
    for byte in text:
        if byte in b"*?[]\\":
            out += b"\\"
        out.append(byte)
    return bytes(out)


class Namespace:
    """A namespace of its own on the server the options name, with a client from
    torpor's factory; ``close()`` deletes every key in it (its one hash tag, and on a
    Cluster its buckets' tags ``<namespace>#...``) and closes the client.

    A missing server option or a server that cannot be used is a one-line
    ``click.ClickException``, before anything is measured."""

    def __init__(self, options: Mapping[str, str]) -> None:
        if not options.get("url") and not options.get("sentinels"):
            raise click.ClickException(NEEDS_SERVER)
        from redis.cluster import RedisCluster  # the redis extra, only here

        from torpor.plugins.redis import create_backend

        base = options.get("namespace") or "torpor-bench"
        self.name = f"{base}.{_RUN}.{next(_SERIAL)}"
        try:
            self._backend: RedisBackend = create_backend(**{**options, "namespace": self.name})
        except TorporError as exc:
            raise click.ClickException(f"bench --backend redis: {exc}") from None
        self.prefix = b"torpor:{" + self.name.encode() + b"}:raw:"
        self._every_node: Any = self._backend.client
        self.client: Any = self._every_node
        if isinstance(self.client, RedisCluster):
            # The raw keys share one hash tag, so one node: talk to it directly, as
            # torpor's one-bucket steps do, since a Cluster pipeline refuses MGET.
            node = self.client.get_node_from_key(self.prefix)  # type: ignore[no-untyped-call]
            self.client = self.client.get_redis_connection(node)

    def fail(self, exc: Exception) -> NoReturn:
        """Raise ``exc`` (a redis-py error) as the torpor error the backend would."""
        with self._backend.translated():
            raise exc
        raise exc  # pragma: no cover - translated() turns every redis-py error

    def delete(self) -> int:
        """Delete every key of the namespace, a SCAN batch at a time; how many."""
        tag = _glob(b"torpor:{" + self.name.encode())
        removed = 0
        with self._backend.translated():
            batch: list[bytes] = []
            every = self._every_node  # torpor's buckets: on every node of a Cluster
            for key in every.scan_iter(match=tag + b"[}#]*", count=_BATCH):
                batch.append(key)
                if len(batch) == _BATCH:
                    removed += int(every.unlink(*batch))
                    batch.clear()
            if batch:
                removed += int(every.unlink(*batch))
        return removed

    def close(self) -> None:
        try:
            self.delete()
        finally:
            self._backend.torpor_close(False)


@contextmanager
def scratch(options: Mapping[str, str]) -> Iterator[dict[str, Any]]:
    """The options of a store in a fresh namespace, deleted on exit."""
    space = Namespace(options)
    try:
        yield {**options, "namespace": space.name}
    finally:
        space.close()


def _fill(space: Namespace, ids: Sequence[bytes], blobs: Sequence[bytes], expiry: int) -> None:
    """Records, the id set (score 0, walked BYLEX) and the expiry set (score
    ``expiry``), pipelined a batch at a time."""
    client, prefix = space.client, space.prefix
    for start in range(0, len(ids), _BATCH):
        chunk = ids[start : start + _BATCH]
        pipe = client.pipeline(transaction=False)
        for k, member in enumerate(chunk, start):
            pipe.set(prefix + b"r:" + member, blobs[k % len(blobs)])
        pipe.zadd(prefix + b"ids", dict.fromkeys(chunk, 0))
        pipe.zadd(prefix + b"exp", dict.fromkeys(chunk, expiry))
        pipe.execute()


def _ids(count: int) -> list[bytes]:
    # Shaped like torpor's generated ids (session_ + 22 URL-safe characters).
    return [f"session_{secrets.token_urlsafe(16)}".encode() for _ in range(count)]


class RedisEngine:
    """Raw redis-py: ``GET`` then the decode; ``SET`` of a new key; ``DEL``; and an
    update that reads, decodes, changes a field, encodes and writes back with a
    compare-and-set script (retried if the value changed meanwhile): two round trips,
    the least an atomic read-modify-write over the network takes."""

    label = RAW_LABEL

    def __init__(
        self, options: Mapping[str, str], count: int, data: tuple[dict[str, Any], ...]
    ) -> None:
        self._space = Namespace(options)
        try:
            self._client = self._space.client
            self._data = data
            blobs = [codec.encode_data(d) for d in data]
            self._keys = [self._space.prefix + b"r:" + m for m in _ids(count)]
            for start in range(0, count, _BATCH):
                pipe = self._client.pipeline(transaction=False)
                for i in range(start, min(start + _BATCH, count)):
                    pipe.set(self._keys[i], blobs[i % len(blobs)])
                pipe.execute()
            self._cas = self._client.register_script(_CAS)
        except BaseException:
            self._space.close()
            raise
        self._errors = _errors()
        self._new: deque[bytes] = deque()
        self._next = 0

    def get(self, i: int) -> object:
        try:
            blob = self._client.get(self._keys[i % len(self._keys)])
        except self._errors as exc:
            self._space.fail(exc)
        return codec.decode_data(_found(blob))

    def put(self, i: int) -> None:
        key = self._space.prefix + f"new-{self._next}".encode()
        self._next += 1
        blob = codec.encode_data(self._data[i % len(self._data)])
        try:
            self._client.set(key, blob)
        except self._errors as exc:
            self._space.fail(exc)
        self._new.append(key)

    def update(self, i: int) -> None:
        key = self._keys[i % len(self._keys)]
        try:
            while True:
                blob = _found(self._client.get(key))
                data = codec.decode_data(blob)
                data["turn"] = i
                if self._cas(keys=[key], args=[blob, codec.encode_data(data)]):
                    return
        except self._errors as exc:
            self._space.fail(exc)

    def delete(self) -> None:
        key = self._new.popleft()
        try:
            self._client.delete(key)
        except self._errors as exc:
            self._space.fail(exc)

    def spare(self) -> int:
        return len(self._new)

    def close(self) -> None:
        self._space.close()


def _errors() -> tuple[type[Exception], ...]:
    """What redis-py raises: ``RedisError`` and the Cluster client's own root."""
    import redis
    from redis.exceptions import RedisClusterException

    return (redis.exceptions.RedisError, RedisClusterException)


def _found(blob: object) -> bytes:
    if blob is None:  # only the benchmark writes this namespace
        raise RuntimeError("a key the raw redis baseline wrote is missing")
    return cast("bytes", blob)


def _walk(client: Any, prefix: bytes, batch: int) -> int:
    """``ZRANGE ids BYLEX LIMIT`` then, per batch, one pipeline: ``MGET`` of its
    records and the ``ZRANGE`` of the next batch.  How many records were read."""
    ids = prefix + b"ids"
    records = prefix + b"r:"
    members = client.zrange(ids, b"-", b"+", bylex=True, offset=0, num=batch)
    read = 0
    while members:
        more = len(members) == batch
        pipe = client.pipeline(transaction=False)
        pipe.mget([records + m for m in members])
        if more:
            pipe.zrange(ids, b"(" + members[-1], b"+", bylex=True, offset=0, num=batch)
        replies = pipe.execute()
        read += sum(value is not None for value in replies[0])
        members = replies[1] if more else []
    return read


def _sweep(client: Any, prefix: bytes, now: int, batch: int) -> int:
    """``ZRANGE exp BYSCORE LIMIT`` then, per batch, one pipeline: ``DEL`` of its
    records, ``ZREM`` from both sorted sets, and the ``ZRANGE`` of the next batch.  How
    many records were deleted."""
    ids, expiry, records = prefix + b"ids", prefix + b"exp", prefix + b"r:"
    due = client.zrange(expiry, b"-inf", now, byscore=True, offset=0, num=batch)
    removed = 0
    while due:
        more = len(due) == batch
        pipe = client.pipeline(transaction=False)
        pipe.delete(*[records + m for m in due])
        pipe.zrem(expiry, *due)
        pipe.zrem(ids, *due)
        if more:
            pipe.zrange(expiry, b"-inf", now, byscore=True, offset=0, num=batch)
        replies = pipe.execute()
        removed += int(replies[0])
        due = replies[3] if more else []
    return removed


def scaling_raw(ctx: Context, size: int) -> Block:
    """The raw walk and sweep over a store of ``size`` records, refilled (untimed)
    before each repetition, in a namespace of their own."""
    space = Namespace(ctx.options)
    ctx.stack.callback(space.close)
    batch = ctx.settings.walk_batch
    blobs = [codec.encode_data(d) for d in ctx.settings.data]
    errors = _errors()

    def run() -> tuple[float, float]:
        client, prefix = space.client, space.prefix
        try:
            _fill(space, _ids(size), blobs, expiry=1)
            started = time.perf_counter()
            walked = _walk(client, prefix, batch)
            walk_s = time.perf_counter() - started
            started = time.perf_counter()
            swept = _sweep(client, prefix, 2, batch)
            sweep_s = time.perf_counter() - started
            left = int(client.exists(prefix + b"ids", prefix + b"exp"))
        except errors as exc:
            space.fail(exc)
        if walked != size or swept != size or left:
            raise click.ClickException(
                f"bench: the raw redis store of {size:,} records walked {walked:,} and "
                f"swept {swept:,} ({left} sorted sets left)"
            )
        return walk_s / size, sweep_s / size

    cases = (
        Case(
            raw_walk_name(size),
            "session",
            kind="raw engine",
            size=size,
            calls=size,
            what=f"ZRANGE BYLEX LIMIT {batch}, then per batch one pipeline: MGET of its "
            "records and the next ZRANGE; per record",
        ),
        Case(
            raw_sweep_name(size),
            "session",
            kind="raw engine",
            size=size,
            calls=size,
            what=f"ZRANGE BYSCORE LIMIT {batch}, then per batch one pipeline: DEL of its "
            "records, ZREM from both sorted sets and the next ZRANGE; per record",
        ),
    )
    return Block(cases, run, warm_up=False)


PROFILE = Profile(
    raw=RedisEngine,
    scratch=scratch,
    scaling_raw=scaling_raw,
    # A call is a round trip on the loopback (~30-100 µs): blocks of a few tenths of
    # a second.
    calls=3_000,
    write_calls=1_000,
)
