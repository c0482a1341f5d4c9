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

The dictionary belongs to the store (the backend object), not to a manager: two
managers opened on one backend object share it, and it stays readable for as long as
the backend object lives (its blobs do too), whichever manager closes first.
"""

from __future__ import annotations

import threading
import weakref
from typing import Final

from torpor import codec
from torpor._capabilities import Capability

__all__ = ["Compactor", "compactor_for"]

SAMPLES: Final = 256
"""Payloads collected before training; more gave no smaller blobs in our runs."""
_SHARED: Final = frozenset(
    {Capability.PERSISTENT, Capability.MULTI_PROCESS, Capability.DISTRIBUTED}
)


class Compactor:
    """``compactor(payload) -> frame``: compress with the store's dictionary once
    there is one.  Thread-safe."""

    def __init__(self, capabilities: frozenset[Capability], owner: object = None) -> None:
        self._samples: list[bytes | bytearray | memoryview] | None = (
            [] if not capabilities & _SHARED else None
        )
        self._lock = threading.Lock()
        # The backend object whose blobs need the dictionary, held weakly: the store
        # must be collected when its managers are.
        try:
            self._owner: weakref.ref[object] | None = weakref.ref(owner)
        except TypeError:
            self._owner = None
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
            if dictionary is None or not dictionary.register():
                return
            self.dictionary = dictionary
            # Forgotten with the store; a store we cannot watch keeps it (16 KiB).
            owner = None if self._owner is None else self._owner()
            if owner is not None:
                weakref.finalize(owner, dictionary.unregister)


_by_store: weakref.WeakKeyDictionary[object, Compactor] = weakref.WeakKeyDictionary()
_by_store_lock = threading.Lock()


def compactor_for(backend: object, capabilities: frozenset[Capability]) -> Compactor:
    """The compactor of the store ``backend`` is: shared by its managers."""
    with _by_store_lock:
        try:
            found = _by_store.get(backend)
            if found is None:
                found = _by_store[backend] = Compactor(capabilities, backend)
        except TypeError:  # not weakly referable, or not hashable: one per manager
            return Compactor(capabilities, backend)
    return found
