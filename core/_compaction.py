"""How a manager compresses the sessions it hibernates.

Every blob is a zstd frame.  Once a store has a zstd dictionary trained on its first
``SAMPLES`` hibernated sessions, the rest are compressed against it: ~35% smaller
blobs for chat-like sessions, which is most of what a hibernated session costs
(docs/performance.md).  The first ones are compressed on their own while they are
collected.  A frame names its dictionary's id, so blobs with and without one (or with
an older one) stay readable side by side.  Where the dictionary lives depends on who
reads the blobs:

* **In the process** (a backend that claims neither ``PERSISTENT`` nor
  ``MULTI_PROCESS`` nor ``DISTRIBUTED``: ets_like).  Trained in the hibernation that
  completes the sample (~40 ms, once) and registered for as long as the store lives.
* **In the store** (a backend with the ``torpor_shared_dictionary`` hook: redis).
  Asked for once when the first manager opens on the backend object; if there is none
  yet, this process collects its own sample, trains in a thread of its own (the
  hibernation that completes the sample runs inside a backend transaction, where no
  hook may be called) and proposes it.  The store keeps the first proposal it gets,
  and every process uses what the store kept, so they all converge on one
  dictionary.  A frame naming an id this process has not registered (another process
  stored the dictionary after this one asked) makes the store be asked again, and the
  read is retried (``codec.add_resolver``).
* **Nowhere** (another persistent or shared store): no dictionary.  A blob read by
  another process, or after a restart, must not name one only this process has.

The dictionary belongs to the store (the backend object), not to a manager: two
managers opened on one backend object share it, and it stays readable for as long as
the backend object lives (its blobs do too), whichever manager closes first.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Final

from torpor import codec
from torpor._capabilities import Capability
from torpor.errors import ManagerClosed, TorporError

__all__ = ["HOOK", "Compactor", "compactor_for"]

log = logging.getLogger("torpor")

SAMPLES: Final = 256
"""Payloads collected before training; more gave no smaller blobs in our runs."""
HOOK: Final = "torpor_shared_dictionary"
_SHARED: Final = frozenset(
    {Capability.PERSISTENT, Capability.MULTI_PROCESS, Capability.DISTRIBUTED}
)


class Compactor:
    """``compactor(payload) -> frame``: compress with the store's dictionary once
    there is one.  Thread-safe."""

    def __init__(self, capabilities: frozenset[Capability], owner: object = None) -> None:
        # The backend object whose blobs need the dictionary, held weakly: the store
        # must be collected when its managers are.
        self._owner: Callable[[], object]
        try:
            self._owner = weakref.ref(owner)
        except TypeError:  # then this compactor is its manager's alone: holding is fine
            self._owner = lambda: owner
        self._shared = callable(getattr(owner, HOOK, None))
        self._samples: list[bytes | bytearray | memoryview] | None = (
            [] if self._shared or not capabilities & _SHARED else None
        )
        self._lock = threading.Lock()
        self._asking = threading.Lock()  # one round trip at a time to the store
        self._asked = False
        self._trainer: threading.Thread | None = None
        self.dictionary: codec.Dictionary | None = None
        if self._shared:
            codec.add_resolver(self._resolve)

    def __call__(self, payload: bytes) -> bytes:
        dictionary = self.dictionary
        if dictionary is not None:
            return dictionary.compress(payload)
        if self._samples is not None:
            self._collect(payload)
        return codec.compress(payload)

    def load(self) -> None:
        """Adopt the store's dictionary, if it has a hook and one is stored.  Asks once,
        when a manager opens (later opens on the same backend object do not ask
        again); a failure (``BackendUnavailable``) fails that open."""
        if not self._shared or self._asked:
            return
        with self._asking:
            if self._asked:
                return
            stored = self._ask(None)
            self._asked = True
        if stored is not None:
            self._adopt(stored)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for a training in flight (a store's sample complete); True once none
        is (for tests and tools: compression never waits for it)."""
        trainer = self._trainer
        if trainer is not None:
            trainer.join(timeout)
            return not trainer.is_alive()
        return True

    def _collect(self, payload: bytes) -> None:
        with self._lock:
            samples = self._samples
            if samples is None:
                return
            samples.append(payload)
            if len(samples) < SAMPLES:
                return
            self._samples = None  # one attempt: data zstd cannot learn from stays so
            if self._shared:
                self._trainer = threading.Thread(
                    target=self._train_shared, args=(samples,), name="torpor-dictionary"
                )
                self._trainer.daemon = True  # a hung server must not hold up exit
                self._trainer.start()
                return
            dictionary = codec.Dictionary.train(samples)
            if dictionary is None or not dictionary.register():
                return
            self.dictionary = dictionary
            self._forget_with_store(dictionary)

    def _train_shared(self, samples: list[bytes | bytearray | memoryview]) -> None:
        try:
            trained = codec.Dictionary.train(samples)
            if trained is None:
                return
            if trained.id in codec._dictionaries:  # a 31-bit draw taken here: draw again
                with self._lock:
                    self._samples = [] if self.dictionary is None else None
                return
            # Proposed, never used before the store says it kept it: a blob must not
            # name a dictionary other processes cannot fetch.
            stored = self._ask(trained.data.as_bytes())
            if stored is not None:
                self._adopt(stored)
        except ManagerClosed:
            pass  # the store went while we trained; nobody hibernates into it any more
        except TorporError as exc:
            log.warning("could not store a zstd dictionary (%s); trying again later", exc)
            with self._lock:
                self._samples = [] if self.dictionary is None else None
        except Exception:
            log.exception("training a zstd dictionary failed; compressing without one")

    def _resolve(self, dict_id: int) -> None:
        """For ``codec``: a frame names a dictionary this process has not registered.
        Ask the store (the frame may be another store's: any store is asked)."""
        with self._asking:
            if codec._dictionaries.get(dict_id) is not None:
                return  # another thread asked while we waited
            try:
                stored = self._ask(None)
            except ManagerClosed:
                return  # a closed store cannot be where the frame comes from
        if stored is not None:
            self._adopt(stored)

    def _ask(self, proposal: bytes | None) -> bytes | None:
        owner = self._owner()
        if owner is None:
            raise ManagerClosed("the store of this compactor is gone")
        stored = getattr(owner, HOOK)(proposal=proposal)
        if stored is not None and not isinstance(stored, bytes | bytearray | memoryview):
            raise TypeError(f"{HOOK} returned a {type(stored).__name__}, not bytes or None")
        return None if stored is None else bytes(stored)

    def _adopt(self, data: bytes) -> None:
        """Use the store's dictionary from now on (and read its frames)."""
        dictionary = codec.Dictionary.shared(data)
        if dictionary is None:
            log.error(
                "the store's zstd dictionary is damaged, or its id is taken in this "
                "process; its hibernated sessions cannot be read, and new ones are "
                "compressed without a dictionary"
            )
            with self._lock:
                self._samples = None  # the store keeps what it has: proposing is futile
            return
        with self._lock:
            current = self.dictionary
            if current is dictionary:
                keep = False  # adopted already: drop the registration just taken
            else:
                if current is not None:  # the store lost its key and another was stored
                    log.warning(
                        "the store's zstd dictionary changed (was its data wiped?); "
                        "compressing with the new one"
                    )
                self.dictionary = dictionary
                self._samples = None
                keep = True
        if keep:
            self._forget_with_store(dictionary)
        else:
            dictionary.unregister()

    def _forget_with_store(self, dictionary: codec.Dictionary) -> None:
        # Forgotten with the store; a store we cannot watch keeps it (16 KiB).
        with contextlib.suppress(TypeError):  # None, or not weakly referable
            weakref.finalize(self._owner(), dictionary.unregister)


_by_store: weakref.WeakKeyDictionary[object, Compactor] = weakref.WeakKeyDictionary()
_by_store_lock = threading.Lock()


def compactor_for(backend: object, capabilities: frozenset[Capability]) -> Compactor:
    """The compactor of the store ``backend`` is: shared by its managers.  A store with
    the ``torpor_shared_dictionary`` hook is asked for its dictionary here (once per
    backend object), which can raise ``BackendUnavailable``."""
    with _by_store_lock:
        try:
            found = _by_store.get(backend)
            if found is None:
                found = _by_store[backend] = Compactor(capabilities, backend)
        except TypeError:  # not weakly referable, or not hashable: one per manager
            found = Compactor(capabilities, backend)
    found.load()
    return found
