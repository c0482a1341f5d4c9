"""The redis backend's secondary indexes and proved ids walk, where a wrong backend
would pass the kit: several clients with their own view of the indexed fields, a
backfill racing writers, a create_index that died half-way, foreign bytes over a
record, and the bucket count a namespace was created with."""

from __future__ import annotations

import random
import threading

import pytest
import redis

import torpor
from tests.redis_fixtures import OpenFn
from tests.servers import Standalone
from torpor.errors import BackendUnavailable, ConfigError, SerializationError
from torpor.plugins.redis import RedisBackend, create_backend
from torpor.plugins.redis._keys import Keys


def _scan(mgr: torpor.Manager, **criteria: object) -> set[str]:
    """The oracle: every session compared with ==, no index involved."""
    return {s.id for s in mgr.sessions() if all(s.data.get(k) == v for k, v in criteria.items())}


def test_a_client_that_has_not_seen_create_index_still_indexes_its_writes(
    open_redis: OpenFn,
) -> None:
    writer, indexer = open_redis(), open_redis()
    writer.create({"colour": "red"}, session_id="before")  # caches "no indexed fields"
    indexer.create_index("colour")
    writer.update("before", lambda d: {**d, "colour": "blue"})
    writer.create({"colour": "blue"}, session_id="after")
    writer.create({"colour": 1}, session_id="one")
    assert {s.id for s in indexer.find(colour="blue")} == {"before", "after"}
    assert {s.id for s in indexer.find(colour=True)} == {"one"}  # 1 == True
    writer.delete("after")
    assert {s.id for s in indexer.find(colour="blue")} == {"before"}


def test_find_answers_through_the_index_only_once_it_is_ready(
    open_redis: OpenFn, raw: redis.Redis, namespace: str
) -> None:
    mgr = open_redis()
    for i in range(30):
        mgr.create({"k": i % 3}, session_id=f"s{i}")
    bucket = Keys(namespace).buckets[0]
    # A create_index that died after marking the field: no entries were written.
    raw.hset(bucket.fields, "f:k", "building")
    raw.hset(bucket.fields, "~version", "stale")
    assert {s.id for s in mgr.find(k=1)} == _scan(mgr, k=1)  # scanned, not from the index
    assert raw.hget(bucket.fields, "f:k") == b"building"
    mgr.create_index("k")  # finishes the job
    assert raw.hget(bucket.fields, "f:k") == b"ready"
    assert {s.id for s in mgr.find(k=1)} == _scan(mgr, k=1)
    assert raw.scard(bucket.entry(torpor.indexing.index_entry("k", 1))) == 10


def test_a_backfill_racing_writers_leaves_the_index_equal_to_a_scan(open_redis: OpenFn) -> None:
    mgr, other = open_redis(), open_redis()
    for i in range(400):
        mgr.create({"k": i % 5, "n": 0}, session_id=f"s{i}")
    done = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        rng = random.Random(7)
        try:
            while not done.is_set():
                sid = f"s{rng.randrange(400)}"
                other.update(sid, lambda d: {**d, "k": rng.randrange(5), "n": d["n"] + 1})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        mgr.create_index("k")
    finally:
        done.set()
        thread.join()
    assert not errors
    for value in range(5):
        assert {s.id for s in mgr.find(k=value)} == _scan(mgr, k=value)


def test_foreign_bytes_over_a_record_are_skipped_by_ids_and_counted(
    open_redis: OpenFn, raw: redis.Redis, namespace: str
) -> None:
    mgr = open_redis()
    for i in range(5):
        mgr.create({"i": i}, session_id=f"s{i}")
    raw.set(Keys(namespace).record(b"s2"), b"not a torpor record")
    assert sorted(mgr.ids()) == ["s0", "s1", "s3", "s4"]
    assert len(mgr) == 4
    assert mgr.stats().damaged == 1
    with pytest.raises(SerializationError, match="s2"):
        mgr.get("s2")
    assert mgr.delete("s2")
    assert mgr.stats().damaged == 0


def test_a_namespace_keeps_the_bucket_count_it_was_created_with(
    redis_standalone: Standalone, namespace: str
) -> None:
    with pytest.raises(ConfigError, match="Cluster"):
        create_backend(url=redis_standalone.url, namespace=namespace, buckets=4)
    backend = create_backend(url=redis_standalone.url, namespace=namespace)
    assert backend.keys.count == 1
    backend.torpor_close(urgent=False)
    with redis.Redis.from_url(redis_standalone.url) as client:
        client.hset(Keys(namespace).meta, "buckets", 8)  # as a Cluster would have made it
        with pytest.raises(ConfigError, match="8 buckets"):
            RedisBackend(client, namespace=namespace, where="x", owns_client=False,
                         touch_resolution_ms=0)  # fmt: skip


def test_wait_replicas_without_replicas_says_the_write_is_not_acknowledged(
    redis_standalone: Standalone, namespace: str
) -> None:
    backend = create_backend(
        url=redis_standalone.url, namespace=namespace, wait_replicas=1, wait_timeout_ms=20
    )
    with torpor.open(backend, sweeper=False) as mgr:
        with pytest.raises(BackendUnavailable, match="0 of 1 replicas"):
            mgr.create({}, session_id="lonely")
        # Applied on the primary all the same: the error says so.
        assert mgr.peek("lonely").data == {}
