"""What hibernation saves in a Redis server's memory (issue 10's goal: hibernating
chat-like sessions cuts the server's memory by at least 70%, on the jemalloc build).

Measured the way an operator would: the server's ``INFO memory`` ``used_memory`` over
an empty namespace, with every session live and then with every one hibernated, and
the sum of ``MEMORY USAGE`` over the namespace's keys as a cross-check.  The store has
its zstd dictionary (``torpor_shared_dictionary``) before the measured sessions are
hibernated, as a store that has been running has.  A memory figure, not a timing:
it is asserted.  Run ``pytest tests/test_redis_memory.py -s`` to see the figures."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import redis

import torpor
from tests.servers import Standalone
from torpor._compaction import HOOK, SAMPLES, Compactor
from torpor.plugins.redis import RedisBackend, create_backend
from torpor.sample import chat_session

SESSIONS = 2000
GOAL = 0.70
"""Issue 10: hibernating chat-like sessions cuts the server's memory by this much."""


class _WithoutDictionary(RedisBackend):
    """RedisBackend as it was before the hook: compressed without a dictionary."""

    torpor_shared_dictionary = None


@dataclass(frozen=True)
class Cut:
    """Bytes the namespace takes per session, live and hibernated."""

    allocator: str
    sessions: int
    live: float  # used_memory delta / sessions
    hibernated: float
    live_usage: float  # sum of MEMORY USAGE / sessions
    hibernated_usage: float

    @property
    def cut(self) -> float:
        return 1 - self.hibernated / self.live

    @property
    def usage_cut(self) -> float:
        return 1 - self.hibernated_usage / self.live_usage

    def __str__(self) -> str:
        return (
            f"{self.sessions} chat-like sessions on {self.allocator}: used_memory "
            f"{self.live:.0f} -> {self.hibernated:.0f} B/session (cut {self.cut:.1%}); "
            f"MEMORY USAGE {self.live_usage:.0f} -> {self.hibernated_usage:.0f} "
            f"(cut {self.usage_cut:.1%})"
        )


def _pattern(namespace: str, what: str = "") -> str:
    return f"torpor:{{{namespace}}}:{what}*"  # one bucket: the namespace is the tag


def _settled(client: redis.Redis, namespace: str) -> None:
    """Drop the tokens of the last minute's conditional writes (``P t:<hex>``), as the
    minute they live for would: they follow the write rate, not the session count."""
    for key in client.scan_iter(match=_pattern(namespace, "t:"), count=1000):
        client.delete(key)


def _used(client: redis.Redis, namespace: str) -> int:
    _settled(client, namespace)
    return int(client.info("memory")["used_memory"])


def _usage(client: redis.Redis, namespace: str) -> int:
    _settled(client, namespace)
    pipe = client.pipeline(transaction=False)
    for key in client.scan_iter(match=_pattern(namespace), count=1000):
        pipe.memory_usage(key, samples=0)
    return sum(size or 0 for size in pipe.execute())


def _flush(client: redis.Redis, namespace: str) -> None:
    for key in client.scan_iter(match=_pattern(namespace), count=1000):
        client.delete(key)


def measure_cut(url: str, count: int, backend_class: type[RedisBackend]) -> Cut:
    """Server memory for ``count`` chat-like sessions in a fresh namespace of the server
    at ``url``, live and then all hibernated, each against the namespace without
    sessions.

    ``SAMPLES`` other sessions are created, hibernated and deleted first: with a
    dictionary hook the store trains its dictionary on them, so that every measured
    session is hibernated against it (its 16 KiB are in the baseline, once per store);
    without one they warm the server up alike (connections, scripts)."""
    namespace = uuid.uuid4().hex[:6]  # as long as the default, "torpor": keys carry it
    clock = torpor.ManualClock()
    backend = create_backend(url=url, namespace=namespace)
    backend.__class__ = backend_class
    with redis.Redis.from_url(url) as client:
        try:
            with torpor.open(backend, clock=clock, sweeper=False, hibernate_after_ms=None) as mgr:
                compactor: Compactor = mgr._compactor  # type: ignore[attr-defined]
                warm = [mgr.create(chat_session_for(i)).id for i in range(SAMPLES)]
                clock.advance(10_000)
                mgr.hibernate_idle(1000)
                assert compactor.join(60)
                assert (compactor.dictionary is not None) == callable(getattr(backend, HOOK, None))
                for sid in warm:
                    mgr.delete(sid)
                empty, empty_usage = _used(client, namespace), _usage(client, namespace)
                for i in range(count):
                    mgr.create(chat_session_for(SAMPLES + i))
                live = _used(client, namespace) - empty
                live_usage = _usage(client, namespace) - empty_usage
                clock.advance(10_000)
                assert mgr.hibernate_idle(1000) == count
                resting = _used(client, namespace) - empty
                resting_usage = _usage(client, namespace) - empty_usage
                allocator = str(client.info("memory")["mem_allocator"])
        finally:
            _flush(client, namespace)
    return Cut(
        allocator, count, live / count, resting / count, live_usage / count, resting_usage / count
    )


def chat_session_for(i: int) -> dict[str, Any]:
    return chat_session(random.Random(i))


@pytest.fixture(scope="module")
def cuts(redis_standalone: Standalone) -> tuple[Cut, Cut]:
    """(with the store's dictionary, without one), measured once for the module."""
    with_dictionary = measure_cut(redis_standalone.url, SESSIONS, RedisBackend)
    without = measure_cut(redis_standalone.url, SESSIONS, _WithoutDictionary)
    print(f"\nwith the store's dictionary: {with_dictionary}\nwithout one: {without}")
    return with_dictionary, without


def test_the_stores_dictionary_makes_hibernated_sessions_a_fifth_smaller_in_the_server(
    cuts: tuple[Cut, Cut],
) -> None:
    with_dictionary, without = cuts
    assert with_dictionary.hibernated <= 0.8 * without.hibernated, cuts
    assert with_dictionary.hibernated_usage <= 0.8 * without.hibernated_usage, cuts


def test_the_two_measures_agree(cuts: tuple[Cut, Cut]) -> None:
    # used_memory is the whole server: a delta the namespace's keys do not explain
    # would be noise (buffers, fragments) and the figure meaningless.
    for cut in cuts:
        assert abs(cut.cut - cut.usage_cut) <= 0.03, cut


def test_hibernating_chat_sessions_cuts_server_memory_by_70_percent(
    cuts: tuple[Cut, Cut],
) -> None:
    with_dictionary, _ = cuts
    assert with_dictionary.cut >= GOAL, with_dictionary
    assert with_dictionary.usage_cut >= GOAL, with_dictionary
