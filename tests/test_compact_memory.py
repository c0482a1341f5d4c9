"""A hibernated session held in memory costs what its compressed bytes are long, as
tracemalloc measures it (issue 9: python-zstandard over-allocates its result)."""

from __future__ import annotations

import random
import tracemalloc

from torpor import codec
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
