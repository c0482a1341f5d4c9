"""How a manager compresses the sessions it hibernates.

Every blob is a zstd frame.  A manager whose blobs never leave its process (a backend
that claims neither ``PERSISTENT`` nor ``MULTI_PROCESS`` nor ``DISTRIBUTED``: ets_like)
also trains a zstd dictionary on the first sessions it hibernates and compresses the
rest against it: ~35% smaller blobs for chat-like sessions, which is most of what a
hibernated session costs (docs/performance.md).  The first ``SAMPLES`` are compressed
on their own while they are collected; training takes ~40 ms, once, inside the
hibernation that completes the sample.

Persistent and shared stores compress without a dictionary: a blob read by another
process, or after a restart, must not name a dictionary only this process has.
(Storing the dictionary in the store would lift that; it is not done yet.)
"""

from __future__ import annotations

import threading
from typing import Final

from torpor import codec
from torpor._capabilities import Capability

__all__ = ["Compactor"]

SAMPLES: Final = 256
"""Payloads collected before training; more gave no smaller blobs in our runs."""
_SHARED: Final = frozenset(
    {Capability.PERSISTENT, Capability.MULTI_PROCESS, Capability.DISTRIBUTED}
)


class Compactor:
    """``compactor(payload) -> frame``: compress with the store's dictionary once
    there is one.  Thread-safe."""

    def __init__(self, capabilities: frozenset[Capability]) -> None:
        self._samples: list[bytes | bytearray | memoryview] | None = (
            [] if not capabilities & _SHARED else None
        )
        self._lock = threading.Lock()
        self.dictionary: codec.Dictionary | None = None

    def __call__(self, payload: bytes) -> bytes:
        dictionary = self.dictionary
        if dictionary is not None:
            return dictionary.compress(payload)
        if self._samples is not None:
            self._collect(payload)
        return codec.compress(payload)

    def _collect(self, payload: bytes) -> None:
        with self._lock:
            samples = self._samples
            if samples is None:
                return
            samples.append(payload)
            if len(samples) < SAMPLES:
                return
            self._samples = None  # one attempt: data zstd cannot learn from stays so
            dictionary = codec.Dictionary.train(samples)
            if dictionary is not None:
                dictionary.register()
                self.dictionary = dictionary

    def close(self) -> None:
        """Forget the dictionary: the store that held its blobs is closed."""
        if self.dictionary is not None:
            self.dictionary.unregister()
