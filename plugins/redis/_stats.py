"""What a namespace costs the server: ``torpor_stats``'s figure, measured by the server.

The sum of ``MEMORY USAGE`` (``SAMPLES 0``: every element counted) over every key the
namespace keeps for its sessions: per bucket the index keys, each record, the
priority and normal lanes of each session's mailbox, and each secondary-index set.
Left out, and said so: the tokens of recent writes (``t:<hex>``, ~100 bytes each for
a minute), the wake-ups and cancel marks of ended sessions (a minute each) and the
namespace's meta keys (its bucket count and zstd dictionary, a few KiB).  Every
command is pipelined, a batch of ids at a time, so memory stays flat however many
sessions there are.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final, cast

from torpor.plugins.redis._items import HEAD, MAGIC
from torpor.plugins.redis._keys import Bucket, Keys

__all__ = ["METHOD", "namespace_memory"]

METHOD: Final = (
    "sum of the server's MEMORY USAGE of the namespace's records, indexes, index sets "
    "and queued mail (not the minute-long write tokens)"
)
_BATCH: Final = 1000


def namespace_memory(client: Any, keys: Keys) -> int:
    total = 0
    for bucket in keys.buckets:
        total += _usage(client, [*bucket.indexes, bucket.mailed])
        for batch in _id_batches(client, bucket):
            pipe = client.pipeline(transaction=False)
            for member in batch:
                pipe.memory_usage(bucket.record(member), samples=0)
                pipe.getrange(bucket.record(member), 0, HEAD - 1)
            replies = pipe.execute(raise_on_error=False)
            total += sum(n for n in replies[::2] if isinstance(n, int))
            lanes = []
            for member, head in zip(batch, replies[1::2], strict=True):
                if isinstance(head, bytes) and head[:2] == MAGIC and len(head) == HEAD:
                    incarnation = int.from_bytes(head[2:10], "big", signed=True)
                    lanes += [bucket.mail(lane, incarnation, member) for lane in ("mp", "mn")]
            total += _usage(client, lanes)
        total += _usage(client, list(_index_sets(client, bucket)))
    return total


def _usage(client: Any, names: list[bytes]) -> int:
    total = 0
    for start in range(0, len(names), _BATCH):
        pipe = client.pipeline(transaction=False)
        for name in names[start : start + _BATCH]:
            pipe.memory_usage(name, samples=0)
        total += sum(n for n in pipe.execute(raise_on_error=False) if isinstance(n, int))
    return total


def _id_batches(client: Any, bucket: Bucket) -> Iterator[list[bytes]]:
    start = b"-"
    while True:
        batch = cast(
            "list[bytes]",
            client.zrange(bucket.ids, start, b"+", bylex=True, offset=0, num=_BATCH),
        )
        if batch:
            yield batch
        if len(batch) < _BATCH:
            return
        start = b"(" + batch[-1]


def _index_sets(client: Any, bucket: Bucket) -> Iterator[bytes]:
    """Each secondary-index set of the bucket once, from the entry lists in ``xs``."""
    seen: set[bytes] = set()
    for _, entries in client.hscan_iter(bucket.entries, count=_BATCH):
        for entry in cast("bytes", entries).split():
            if entry not in seen:
                seen.add(entry)
                yield bucket.prefix + b"x:" + entry
