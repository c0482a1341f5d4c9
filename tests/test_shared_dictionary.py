"""A zstd dictionary kept in the store (``torpor_shared_dictionary``): trained once,
stored once, used by every process that reads the store's hibernated sessions.

Two backend objects on one store are two "processes" as far as torpor's compaction
goes (each has its own compactor); the dictionary registry is process-wide, so the
tests that need a reader without the writer's registration drop the writer first.
The redis tests run real separate processes on a real server.  Time comes from
ManualClock; the only waits are for a training thread or a process to finish."""

from __future__ import annotations

import gc
import random
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import zstandard

import torpor
from tests.minimal_backend import MinimalBackend
from tests.servers import Cluster, Standalone
from torpor import Capability, Record, codec
from torpor._compaction import HOOK, SAMPLES, Compactor, compactor_for
from torpor.errors import BackendUnavailable, SerializationError
from torpor.plugins.redis import RedisBackend, create_backend
from torpor.plugins.redis._dictionary import shared_dictionary
from torpor.plugins.redis._items import unwrap
from torpor.plugins.redis._keys import Keys
from torpor.sample import chat_session

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 30.0  # a bound on waiting for a real event, never a threshold


# -- an in-test store with the hook ---------------------------------------------------
class Store:
    """What several backend objects share: blobs and one dictionary slot."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.dictionary: bytes | None = None
        self.lock = threading.Lock()
        self.asked = 0
        self.proposals: list[bytes] = []
        self.barrier: threading.Barrier | None = None  # proposals wait for each other
        self.down = False


class SharingBackend(MinimalBackend):
    """A persistent store (blobs outlive the process, as far as torpor knows) with the
    dictionary hook: SET NX semantics under the store's lock."""

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.blobs = store.blobs
        self.lock = store.lock
        self.store = store

    def torpor_capabilities(self) -> list[Capability]:
        return [Capability.PERSISTENT]

    def torpor_shared_dictionary(self, proposal: bytes | None) -> bytes | None:
        store = self.store
        if store.down:
            raise BackendUnavailable("the store is down (test)")
        if proposal is None:
            store.asked += 1
            return store.dictionary
        store.proposals.append(proposal)
        if store.barrier is not None:
            store.barrier.wait(WAIT_S)  # both trained before either stores
        with store.lock:
            if store.dictionary is None:
                store.dictionary = proposal
            return store.dictionary


def _open(backend: object, clock: torpor.ManualClock, **options: object) -> torpor.Manager:
    return torpor.open(backend, clock=clock, sweeper=False, hibernate_after_ms=None, **options)


def _hibernate(
    mgr: torpor.Manager, clock: torpor.ManualClock, count: int, prefix: str, seed: int = 0
) -> list[str]:
    ids = [
        mgr.create(chat_session(random.Random(seed + i)), session_id=f"{prefix}{i}").id
        for i in range(count)
    ]
    clock.advance(10_000)
    assert mgr.hibernate_idle(1000) == count
    return ids


def _compactor(mgr: torpor.Manager) -> Compactor:
    compactor: Compactor = mgr._compactor  # type: ignore[attr-defined]
    return compactor


def _trained(mgr: torpor.Manager) -> codec.Dictionary:
    compactor = _compactor(mgr)
    assert compactor.join(WAIT_S), "the training thread did not finish"
    assert compactor.dictionary is not None
    return compactor.dictionary


def _payload(blob: bytes) -> bytes:
    payload = Record.from_blob(blob).payload
    assert payload is not None
    return payload


def _dict_id(blob: bytes) -> int:
    """The dictionary id a stored hibernated blob's frame names (0: none)."""
    return zstandard.get_frame_parameters(_payload(blob)).dict_id


# -- one store, in process ------------------------------------------------------------
def test_a_shared_store_trains_stores_and_uses_one_dictionary() -> None:
    store, clock = Store(), torpor.ManualClock()
    with _open(SharingBackend(store), clock) as mgr:
        assert store.asked == 1  # at open: nothing stored yet
        ids = _hibernate(mgr, clock, SAMPLES, "a")
        dictionary = _trained(mgr)
        assert store.proposals == [store.dictionary] and store.dictionary is not None
        assert dictionary.id == zstandard.ZstdCompressionDict(store.dictionary).dict_id()
        assert {_dict_id(store.blobs[sid]) for sid in ids} == {0}  # the sample itself
        later = _hibernate(mgr, clock, 100, "b", seed=SAMPLES)
        assert {_dict_id(store.blobs[sid]) for sid in later} == {dictionary.id}
        frames = [_payload(store.blobs[sid]) for sid in later]
        plain = [codec.compress(codec.decompress(frame, 1 << 20)) for frame in frames]
        assert sum(map(len, frames)) < 0.8 * sum(map(len, plain)), "not ~35% smaller"
        assert [mgr.get(sid).data for sid in later] == [  # type: ignore[union-attr]
            chat_session(random.Random(SAMPLES + i)) for i in range(100)
        ]


def test_another_process_reads_blobs_compressed_with_a_dictionary_stored_after_it_opened() -> None:
    store, clock = Store(), torpor.ManualClock()
    reader = _open(SharingBackend(store), clock)  # opened first: nothing stored yet
    try:
        writer_backend = SharingBackend(store)
        writer = _open(writer_backend, clock)
        _hibernate(writer, clock, SAMPLES, "a")
        dictionary_id = _trained(writer).id
        ids = _hibernate(writer, clock, 20, "b", seed=SAMPLES)
        writer.close()
        del writer, writer_backend
        gc.collect()
        # The writer's process is gone: here, its registration of the dictionary.
        assert dictionary_id not in codec._dictionaries
        asked = store.asked
        assert [reader.get(sid).data for sid in ids] == [  # type: ignore[union-attr]
            chat_session(random.Random(SAMPLES + i)) for i in range(20)
        ]
        assert store.asked == asked + 1  # once, then the reader has it
        # The reader compresses with it too now, and never trains its own.
        later = [reader.create({"n": i}, session_id=f"c{i}").id for i in range(5)]
        clock.advance(10_000)
        assert reader.hibernate_idle(1000) == 25  # and the 20 it woke
        assert {_dict_id(store.blobs[sid]) for sid in later + ids} == {dictionary_id}
        assert len(store.proposals) == 1
    finally:
        reader.close()


def test_a_manager_opened_later_finds_the_stored_dictionary() -> None:
    store, clock = Store(), torpor.ManualClock()
    first_backend = SharingBackend(store)
    with _open(first_backend, clock) as first:
        _hibernate(first, clock, SAMPLES, "a")
        dictionary_id = _trained(first).id
    del first, first_backend
    gc.collect()
    assert dictionary_id not in codec._dictionaries
    with _open(SharingBackend(store), clock) as again:
        assert _compactor(again).dictionary is not None
        assert _compactor(again).dictionary.id == dictionary_id  # type: ignore[union-attr]
        ids = _hibernate(again, clock, 3, "b")
        assert {_dict_id(store.blobs[sid]) for sid in ids} == {dictionary_id}
        assert len(store.proposals) == 1  # it did not train: it used the stored one


def test_managers_that_train_at_once_converge_on_the_dictionary_stored_first() -> None:
    store, clock = Store(), torpor.ManualClock()
    store.barrier = threading.Barrier(2)
    one, two = _open(SharingBackend(store), clock), _open(SharingBackend(store), clock)
    try:
        _hibernate(one, clock, SAMPLES, "a")
        _hibernate(two, clock, SAMPLES, "b", seed=1000)
        first, second = _trained(one), _trained(two)
        assert len(store.proposals) == 2 and store.proposals[0] != store.proposals[1]
        assert first is second  # one registration, shared, of what the store kept
        assert first.data.as_bytes() == store.dictionary
        ids = _hibernate(one, clock, 5, "c") + _hibernate(two, clock, 5, "d")
        assert {_dict_id(store.blobs[sid]) for sid in ids} == {first.id}
    finally:
        one.close()
        two.close()


def test_the_dictionary_stays_readable_until_the_last_store_holding_it_goes() -> None:
    store, clock = Store(), torpor.ManualClock()
    one_backend, two_backend = SharingBackend(store), SharingBackend(store)
    one, two = _open(one_backend, clock), _open(two_backend, clock)
    _hibernate(one, clock, SAMPLES, "a")
    dictionary = _trained(one)
    ids = _hibernate(two, clock, SAMPLES + 5, "b")  # two trains too, and adopts the stored one
    assert _trained(two) is dictionary
    one.close()
    del one, one_backend
    gc.collect()
    assert codec._dictionaries.get(dictionary.id) is dictionary  # two still holds it
    asked = store.asked
    assert two.get(ids[-1]) is not None and store.asked == asked  # no round trip
    two.close()
    del two, two_backend
    gc.collect()
    assert dictionary.id not in codec._dictionaries


# -- damaged data ---------------------------------------------------------------------
def _foreign_frame(mgr: torpor.Manager, store: Store, sid: str) -> int:
    """Rewrite ``sid``'s hibernated blob against a dictionary no store has; its id."""
    samples: list[bytes | bytearray | memoryview] = [
        codec.encode_value(chat_session(random.Random(9000 + i))) for i in range(SAMPLES)
    ]
    stranger = codec.Dictionary.train(samples)
    assert stranger is not None and stranger.id not in codec._dictionaries
    record = Record.from_blob(store.blobs[sid])
    raw = record.woken(1 << 20).payload
    assert raw is not None
    store.blobs[sid] = record._replace(payload=stranger.compress(raw)).blob
    return stranger.id


def test_a_blob_naming_a_dictionary_no_one_has_is_damaged() -> None:
    store, clock = Store(), torpor.ManualClock()
    with _open(SharingBackend(store), clock) as mgr:
        ids = _hibernate(mgr, clock, 4, "s")
        unknown = _foreign_frame(mgr, store, "s2")
        asked = store.asked
        with pytest.raises(SerializationError, match=rf"'s2'.*dictionary {unknown}"):
            mgr.get("s2")
        assert store.asked == asked + 1  # the store was asked before giving up
        assert sorted(s.id for s in mgr.sessions()) == [i for i in ids if i != "s2"]
        assert mgr.stats().damaged == 1
        assert mgr.delete("s2")  # removable all the same


def test_a_blob_naming_an_unknown_dictionary_while_the_store_is_down_is_not_damage() -> None:
    # A valid blob whose dictionary the store could not be asked for: the read fails
    # as the store does, and nothing is taken for damaged.
    store, clock = Store(), torpor.ManualClock()
    with _open(SharingBackend(store), clock) as mgr:
        _hibernate(mgr, clock, 2, "s")
        _foreign_frame(mgr, store, "s1")
        store.down = True
        with pytest.raises(BackendUnavailable, match="down"):
            mgr.get("s1")
        store.down = False
        with pytest.raises(SerializationError):
            mgr.get("s1")


def test_a_damaged_stored_dictionary_is_not_used_and_not_replaced() -> None:
    store, clock = Store(), torpor.ManualClock()
    store.dictionary = b"\x37\xa4\x30\xec" + b"\x00" * 64  # zstd's magic, then nothing
    with _open(SharingBackend(store), clock) as mgr:
        assert _compactor(mgr).dictionary is None
        ids = _hibernate(mgr, clock, SAMPLES + 5, "s")
        assert _compactor(mgr).join(WAIT_S) and store.proposals == []
        assert {_dict_id(store.blobs[sid]) for sid in ids} == {0}
        assert mgr.get(ids[-1]) is not None


def test_a_store_without_the_hook_keeps_compressing_without_a_dictionary() -> None:
    class Persistent(MinimalBackend):
        def torpor_capabilities(self) -> list[Capability]:
            return [Capability.PERSISTENT]

    clock, backend = torpor.ManualClock(), Persistent()
    with _open(backend, clock) as mgr:
        ids = _hibernate(mgr, clock, SAMPLES + 5, "s")
        assert compactor_for(backend, mgr.capabilities).dictionary is None
        assert {_dict_id(backend.blobs[sid]) for sid in ids} == {0}


# -- redis: the functions, and real separate processes ----------------------------------
class _RedisWithDictionary(RedisBackend):
    """RedisBackend with the hook, until ``_backend.py`` has it."""

    def torpor_shared_dictionary(self, proposal: bytes | None) -> bytes | None:
        return shared_dictionary(self.client, self.keys, self.where, proposal)


def redis_backend(url: str, namespace: str, **options: object) -> RedisBackend:
    """A redis backend with the dictionary hook (also used by child processes)."""
    backend = create_backend(url=url, namespace=namespace, **options)
    if not callable(getattr(backend, HOOK, None)):
        backend.__class__ = _RedisWithDictionary
    return backend


@pytest.fixture
def raw(redis_standalone: Standalone) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_standalone.url) as client:
        yield client


def test_redis_keeps_the_first_proposal_and_returns_it_to_everyone(
    raw: redis.Redis, redis_standalone: Standalone
) -> None:
    keys = Keys(f"test-{uuid.uuid4().hex}")
    where = "test server"
    assert shared_dictionary(raw, keys, where, None) is None
    assert shared_dictionary(raw, keys, where, b"first") == b"first"
    assert shared_dictionary(raw, keys, where, b"second") == b"first"
    assert shared_dictionary(raw, keys, where, None) == b"first"
    assert raw.get(keys.dictionary) == b"first" and raw.ttl(keys.dictionary) == -1
    raw.delete(keys.dictionary)


def test_redis_cluster_keeps_one_dictionary_per_namespace(redis_cluster: Cluster) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    backend = redis_backend(redis_cluster.url, namespace, cluster=True)
    try:
        hook = getattr(backend, HOOK)
        assert hook(proposal=None) is None
        assert hook(proposal=b"first") == b"first"
        assert hook(proposal=b"second") == b"first"
        assert backend.client.get(backend.keys.dictionary) == b"first"
        backend.client.delete(backend.keys.dictionary)
    finally:
        backend.torpor_close(urgent=False)


def test_redis_errors_become_torpor_errors() -> None:
    keys = Keys("unreachable")
    dead = redis.Redis(port=1, socket_connect_timeout=0.5, retry=None)
    with pytest.raises(BackendUnavailable, match="nowhere"):
        shared_dictionary(dead, keys, "nowhere", None)


_CHILD = """
import random, sys, time
import redis, torpor
from tests.test_shared_dictionary import redis_backend
from torpor import codec
from torpor._compaction import SAMPLES
from torpor.sample import chat_session

url, namespace, prefix, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
backend = redis_backend(url, namespace)
gate = redis.Redis.from_url(url)

class ProposingTogether(type(backend)):
    def torpor_shared_dictionary(self, proposal):
        if proposal is not None:  # both processes trained before either stores
            gate.incr(f"{namespace}:test-gate")
            deadline = time.monotonic() + 30
            while int(gate.get(f"{namespace}:test-gate")) < 2 and time.monotonic() < deadline:
                time.sleep(0.005)  # a bounded poll for the other process's event
        return super().torpor_shared_dictionary(proposal)

backend.__class__ = ProposingTogether
clock = torpor.ManualClock()
with torpor.open(backend, clock=clock, sweeper=False, hibernate_after_ms=None) as mgr:
    # The sample, as hibernations hand it over: a pass of either process hibernates
    # every idle session of the store, so passes would split the two samples.
    for i in range(SAMPLES):
        mgr._compactor(codec.encode_data(chat_session(random.Random(seed + i))))
    assert mgr._compactor.join(60) and mgr._compactor.dictionary is not None
    for i in range(20):
        data = chat_session(random.Random(seed + 1000 + i))
        mgr.create(data, session_id=f"{prefix}{i}", timeout_ms=None)
    clock.advance(10_000)
    mgr.hibernate_idle(1000)
    print(mgr._compactor.dictionary.id, flush=True)
"""


def test_processes_that_train_at_once_share_one_dictionary_on_redis(
    raw: redis.Redis, redis_standalone: Standalone
) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    clock = torpor.ManualClock()
    reader_backend = redis_backend(redis_standalone.url, namespace)
    with _open(reader_backend, clock) as reader:  # opened before any dictionary exists
        children = [
            subprocess.Popen(
                [sys.executable, "-c", _CHILD, redis_standalone.url, namespace, p, str(seed)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for p, seed in (("x", 0), ("y", 5000))
        ]
        outputs = [child.communicate(timeout=120) for child in children]
        codes = [child.returncode for child in children]
        assert codes == [0, 0], "\n".join(err for _, err in outputs)
        stored = raw.get(Keys(namespace).dictionary)
        assert stored is not None
        stored_id = zstandard.ZstdCompressionDict(stored).dict_id()
        assert [int(out) for out, _ in outputs] == [stored_id, stored_id]
        # This process never had it: the reads below find it through the store.
        assert stored_id not in codec._dictionaries
        keys = Keys(namespace)
        for prefix, seed in (("x", 0), ("y", 5000)):
            for i in range(20):
                stored = raw.get(keys.record(f"{prefix}{i}".encode()))
                assert stored is not None and _dict_id(unwrap(stored)) == stored_id
                session = reader.get(f"{prefix}{i}")
                assert session is not None
                assert session.data == chat_session(random.Random(seed + 1000 + i))
        assert _compactor(reader).dictionary is not None
        assert _compactor(reader).dictionary.id == stored_id  # type: ignore[union-attr]
    _flush(raw, namespace)


def _flush(client: redis.Redis, namespace: str) -> None:
    for key in client.scan_iter(match=f"torpor:{{{namespace}}}:*", count=1000):
        client.delete(key)
    client.delete(f"{namespace}:test-gate")
