"""The two in-memory indexes of the ets_like backend.

``SeqIndex`` keeps creation order in fixed-size chunks, so a walk can resume from any
position in O(chunk) and a session keeps its place when it is rewritten: a session
that exists for the whole walk is met exactly once whatever else changes.  A walk
stops at the sequence number it started with, so a session created during the walk
(an id deleted and created again included) is never met, and no id comes twice.

``TimeIndex`` files ids into buckets of ``width_ms`` by a timestamp (last access for
idleness, expiry time for expiry).  Finding everything below a bound visits only the
buckets below it, so a sweep costs what the idle or expired sessions cost, not what
the store holds.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator

__all__ = ["SeqIndex", "TimeIndex"]


class SeqIndex:
    """Creation order: ``seq -> id`` in chunks of ``chunk`` consecutive seqs."""

    def __init__(self, chunk: int = 1024) -> None:
        self._chunk = chunk
        self._chunks: dict[int, dict[int, str]] = {}
        self._next = 0

    def add(self, session_id: str) -> int:
        seq = self._next
        self._next += 1
        self._chunks.setdefault(seq // self._chunk, {})[seq] = session_id
        return seq

    def remove(self, seq: int) -> None:
        number = seq // self._chunk
        chunk = self._chunks[number]
        del chunk[seq]
        if not chunk:
            del self._chunks[number]

    @property
    def next_seq(self) -> int:
        """The sequence number the next added id will get."""
        return self._next

    def walk(self, cursor: int, end: int, limit: int) -> tuple[list[str], int | None]:
        """Up to ``limit`` ids with ``cursor <= seq < end``; the next cursor, or None
        at the end."""
        found: list[str] = []
        number = cursor // self._chunk
        last = (min(self._next, end) - 1) // self._chunk
        while number <= last:
            chunk = self._chunks.get(number)
            if chunk:
                for seq, sid in chunk.items():
                    if cursor <= seq < end:
                        found.append(sid)
                        cursor = seq + 1
                        if len(found) >= limit:
                            return found, cursor
            number += 1
            cursor = max(cursor, number * self._chunk)
        return found, None


class TimeIndex:
    """``id -> time`` filed in buckets of ``width_ms``, with the bucket numbers kept
    sorted: a query walks the buckets below its bound in order and stops there, so it
    costs what it finds, not the number of buckets (a million sessions accessed a
    second apart make a million buckets)."""

    def __init__(self, width_ms: int = 1000) -> None:
        self.width = width_ms
        self._buckets: dict[int, dict[str, int]] = {}
        self._numbers: list[int] = []  # the keys of _buckets, sorted

    def add(self, session_id: str, at: int) -> None:
        number = at // self.width
        bucket = self._buckets.get(number)
        if bucket is None:
            bucket = self._buckets[number] = {}
            bisect.insort(self._numbers, number)
        bucket[session_id] = at

    def remove(self, session_id: str, at: int) -> None:
        number = at // self.width
        bucket = self._buckets.get(number)
        if bucket is not None:
            bucket.pop(session_id, None)
            if not bucket:
                del self._buckets[number]
                del self._numbers[bisect.bisect_left(self._numbers, number)]

    def _below(self, bound: int) -> Iterator[str]:
        top = bound // self.width
        for number in self._numbers:
            if number > top:
                return
            for sid, at in self._buckets[number].items():
                if at < bound:
                    yield sid

    def count_below(self, bound: int) -> int:
        """How many ids are filed at a time < ``bound``."""
        return sum(1 for _ in self._below(bound))

    def below(self, bound: int, limit: int) -> list[str]:
        """Up to ``limit`` ids filed at a time < ``bound``, oldest buckets first."""
        return list(itertools.islice(self._below(bound), limit))
