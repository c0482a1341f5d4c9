"""A hibernated session held in memory costs what its compressed bytes are long, as
tracemalloc measures it (issue 9: python-zstandard over-allocates its result)."""

from __future__ import annotations

import gc
import itertools
import random
import tracemalloc

import pytest

import torpor
from torpor import codec
from torpor._compaction import SAMPLES
from torpor.sample import chat_session


def test_compressed_blobs_hold_no_more_memory_than_their_length() -> None:
    payloads = [codec.encode_value(chat_session(random.Random(i))) for i in range(300)]
    tracemalloc.start()
    try:
        floor = tracemalloc.get_traced_memory()[0]
        blobs = [codec.compress(p) for p in payloads]
        held = tracemalloc.get_traced_memory()[0] - floor
    finally:
        tracemalloc.stop()
    length = sum(map(len, blobs))
    # A bytes object adds ~33 bytes of header, and the list 8 bytes a slot; the
    # over-allocated buffers held ~3.3x the length.
    assert held <= length + 64 * len(blobs), (held, length)
    assert all(codec.decompress(b, 1 << 20) == p for b, p in zip(blobs, payloads, strict=True))


def _store_cost(count: int, *, hibernate: bool) -> tuple[float, float, float]:
    """(traced bytes per session held by an ets_like store, its own memory figure per
    session, live size: traced bytes of one session's data as Python objects)."""
    clock = torpor.ManualClock()
    rng = random.Random(5)
    with torpor.open("ets_like", clock=clock, sweeper=False, hibernate_after_ms=None) as mgr:
        tracemalloc.start()
        try:
            gc.collect()
            floor = tracemalloc.get_traced_memory()[0]
            for _ in range(count):
                mgr.create(chat_session(rng))  # the caller keeps nothing: the store does
            if hibernate:
                clock.advance(60_000)
                assert mgr.hibernate_idle(1000) == count
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - floor
            some = [s.data for s in itertools.islice(mgr.sessions(), 200)]
            gc.collect()
            live = (tracemalloc.get_traced_memory()[0] - floor - held) / len(some)
        finally:
            tracemalloc.stop()
        figure = mgr.stats().memory_bytes
        assert figure is not None
        return held / count, figure / count, live


@pytest.mark.parametrize("hibernate", [False, True], ids=["active", "hibernated"])
def test_ets_like_memory_figure_is_what_tracemalloc_measures(hibernate: bool) -> None:
    traced, figure, _ = _store_cost(1000, hibernate=hibernate)
    assert abs(figure - traced) <= 0.15 * traced, (figure, traced)


def test_an_idle_chat_session_costs_under_a_tenth_of_its_live_size() -> None:
    # Enough sessions for the store to train its zstd dictionary (torpor._compaction).
    hibernated, _, live = _store_cost(2 * SAMPLES + 500, hibernate=True)
    assert hibernated <= 0.10 * live, (hibernated, live)
    active, _, _ = _store_cost(500, hibernate=False)
    assert active <= 0.35 * live, (active, live)  # encoded bytes at rest, not live dicts


def test_a_store_and_its_dictionary_go_when_its_managers_are_dropped() -> None:
    import weakref

    from torpor import _compaction
    from torpor.plugins.ets_like import EtsLikeBackend

    clock = torpor.ManualClock()
    backend = EtsLikeBackend()
    with torpor.open(backend, clock=clock, sweeper=False, hibernate_after_ms=None) as mgr:
        for i in range(SAMPLES + 10):
            mgr.create({"n": i, "text": "chat " * (i % 7)})
        clock.advance(60_000)
        mgr.hibernate_idle(1000)
        dictionary = _compaction.compactor_for(backend, mgr.capabilities).dictionary
        assert dictionary is not None and codec._dictionaries.get(dictionary.id) is dictionary
    gone = weakref.ref(backend)
    del backend, mgr
    gc.collect()
    assert gone() is None  # the compactor does not keep its store alive
    assert dictionary.id not in codec._dictionaries


def test_a_dictionary_whose_id_is_taken_is_not_registered() -> None:
    samples: list[bytes | bytearray | memoryview] = [
        codec.encode_value(chat_session(random.Random(i))) for i in range(SAMPLES)
    ]
    first = codec.Dictionary.train(samples)
    assert first is not None and first.register()
    try:
        twin = codec.Dictionary(first.data)  # same id, another object
        assert not twin.register() and codec._dictionaries[first.id] is first
        twin.unregister()  # not its registration: the first stays readable
        assert codec._dictionaries[first.id] is first
    finally:
        first.unregister()
    assert first.id not in codec._dictionaries
