"""Striped in-process locks: threads of one process take turns per id before the
server-side compare-and-set, so retries come only from other processes."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager

__all__ = ["StripedLocks"]


class StripedLocks:
    def __init__(self, stripes: int = 64) -> None:
        self._locks = [threading.Lock() for _ in range(stripes)]

    @contextmanager
    def holding(self, ids: Iterable[str]) -> Iterator[None]:
        # Sorted stripes: two batches never wait for each other in a cycle.
        stripes = sorted({zlib.crc32(i.encode("utf-8", "surrogatepass")) % len(self._locks)
                          for i in ids})  # fmt: skip
        with ExitStack() as stack:
            for stripe in stripes:
                stack.enter_context(self._locks[stripe])
            yield
