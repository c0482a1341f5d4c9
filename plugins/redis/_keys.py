"""Where a namespace's data lives in the keyspace.

A namespace is split into *buckets*: one on a standalone server or behind Sentinel, a
configurable number on a Cluster (``buckets=``, default 16).  A session lives in the
bucket ``crc32(id) % count``, and every key of a bucket carries that bucket's hash tag,
so all the keys one session touches (its record, its index entries, its mailbox) fall
in one slot and every hook is one atomic server-side step.  On a Cluster the bucket
tags are chosen so that their slots are spread evenly over the slot space: with the
usual contiguous slot ranges, every primary holds some buckets.  The bucket count is
stored at the namespace's first open (``torpor:{ns}:meta``); opening it again with
another count is refused, since every session would be looked for in the wrong bucket.

Per bucket (``P`` = ``torpor:{<tag>}:``; one bucket: the tag is the namespace):

``P r:<id>``            the record: a head (incarnation, version, deadline, proof: see
                        ``_scripts.py``) then ``Record.blob`` as the manager encoded it
``P ids``               sorted set, every id with score 0: walked BYLEX (ids ordered by
                        their UTF-8 bytes), so a walk is exactly-once where SCAN is not
``P idle``              sorted set, active (not hibernated) ids by ``last_accessed``
``P exp``               sorted set, ids with a timeout by ``Record.expires_at()``
``P xs``                hash, id -> its index entries (hex, space-separated)
``P x:<entry>``         set of the ids filed under one index entry (``find``)
``P fields``            hash, ``f:<indexed field>`` -> ``ready`` or ``building``, plus
                        ``~version`` (a random token ``create_index`` replaces): a write
                        names the version it computed entries for, refused if stale
``P t:<hex>``           the token of a recent conditional write (expires in 60 s)
``P mp:<inc>:<id>``     list, the priority lane of one incarnation's mailbox (``<inc>``:
                        the incarnation's 8 head bytes in hex)
``P mn:<inc>:<id>``     list, its normal lane
``P mq:<inc>:<id>``     integer, receivers blocked on it now (all processes)
``P mailed``            set, the ids that may have mail keys (any incarnation's): filed
                        by whatever creates one, dropped when the incarnation ends
``P mw:<inc>:<id>``     list, wake-ups pushed when the incarnation ends, one per
                        blocked receiver, holding the reason (``cancelled``, ...)
``P mc:<inc>:<id>``     marks a cancelled incarnation (expires in 60 s)

The namespace's own keys (tag ``{<ns>}``): ``torpor:{ns}:meta`` (hash: ``buckets``) and
``torpor:{ns}:dict`` (the shared zstd dictionary, when there is one).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Final

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

__all__ = ["Bucket", "Keys", "spread_tags"]

_SEARCH: Final = 100_000
_INCARNATION: Final = struct.Struct(">q")


@dataclass(frozen=True)
class Bucket:
    """The keys of one bucket; ``prefix`` is ``torpor:{<tag>}:``."""

    index: int
    prefix: bytes

    @cached_property
    def record_prefix(self) -> bytes:
        return self.prefix + b"r:"

    @cached_property
    def ids(self) -> bytes:
        return self.prefix + b"ids"

    @cached_property
    def idle(self) -> bytes:
        return self.prefix + b"idle"

    @cached_property
    def expiry(self) -> bytes:
        return self.prefix + b"exp"

    @cached_property
    def entries(self) -> bytes:
        return self.prefix + b"xs"

    @cached_property
    def fields(self) -> bytes:
        return self.prefix + b"fields"

    @cached_property
    def mailed(self) -> bytes:
        return self.prefix + b"mailed"

    @cached_property
    def indexes(self) -> list[bytes]:
        """The keys every write script takes first, in this order."""
        return [self.ids, self.idle, self.expiry, self.entries, self.fields]

    def token(self, token: str) -> bytes:
        return self.prefix + b"t:" + token.encode("ascii")

    def record(self, member: bytes) -> bytes:
        return self.record_prefix + member

    def entry(self, entry: bytes) -> bytes:
        return self.prefix + b"x:" + entry.hex().encode("ascii")

    def mail(self, lane: str, incarnation: int, member: bytes) -> bytes:
        """``lane`` is ``mp``, ``mn``, ``mq``, ``mw`` or ``mc`` (see the module doc)."""
        tag = _INCARNATION.pack(incarnation).hex()
        return self.prefix + f"{lane}:{tag}:".encode("ascii") + member


@dataclass(frozen=True)
class Keys:
    """A namespace of ``count`` buckets."""

    namespace: str
    count: int = 1
    buckets: tuple[Bucket, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tags = spread_tags(self.namespace, self.count)
        object.__setattr__(
            self,
            "buckets",
            tuple(Bucket(i, b"torpor:{" + t + b"}:") for i, t in enumerate(tags)),
        )

    @property
    def prefix(self) -> bytes:
        """The namespace's own prefix (its meta keys)."""
        return b"torpor:{" + self.namespace.encode("utf-8") + b"}:"

    @property
    def meta(self) -> bytes:
        return self.prefix + b"meta"

    @property
    def dictionary(self) -> bytes:
        return self.prefix + b"dict"

    def bucket_of(self, member: bytes) -> Bucket:
        if self.count == 1:
            return self.buckets[0]
        return self.buckets[zlib.crc32(member) % self.count]

    # One bucket (standalone, Sentinel): the shorthands tests and tools use.
    @property
    def ids(self) -> bytes:
        return self.buckets[0].ids

    @property
    def idle(self) -> bytes:
        return self.buckets[0].idle

    @property
    def expiry(self) -> bytes:
        return self.buckets[0].expiry

    def record(self, member: bytes) -> bytes:
        return self.bucket_of(member).record(member)


def spread_tags(namespace: str, count: int) -> list[bytes]:
    """``count`` hash tags for ``namespace``, bucket ``i``'s in the ``i``-th equal share
    of the Cluster's slots.  One bucket: the namespace itself."""
    base = namespace.encode("utf-8")
    if count == 1:
        return [base]
    share = REDIS_CLUSTER_HASH_SLOTS / count
    tags = []
    for i in range(count):
        low, high = int(i * share), int((i + 1) * share)
        for n in range(_SEARCH):
            tag = base + b"#" + str(i).encode() + b"." + str(n).encode()
            if low <= key_slot(b"{" + tag + b"}") < high:
                tags.append(tag)
                break
        else:  # pragma: no cover - 100,000 draws always land in a share of >= 1 slot
            raise AssertionError("no tag found for a bucket")
    return tags
