"""A hot ``get`` against raw ``GET`` + decode, on one client, interleaved.

``torpor bench`` measures the same ratio among many cases; this isolates it: one
redis client (torpor's own, so the same pool and timeouts), 300 chat-like sessions,
nine interleaved rounds of raw ``GET`` + ``codec.decode_data`` and of ``mgr.get``,
the median of each.  Usage: ``python tools/redis_get_ratio.py PORT``.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torpor
from torpor import codec
from torpor.plugins.redis import create_backend


def _per_call_us(call: Callable[[Any], object], items: Sequence[Any]) -> float:
    start = time.perf_counter()
    for item in items:
        call(item)
    return (time.perf_counter() - start) / len(items) * 1e6


def main(port: int) -> None:
    backend = create_backend(url=f"redis://127.0.0.1:{port}/0", namespace="get-ratio")
    data = {"messages": [{"role": "user", "content": "x" * 60, "n": i} for i in range(30)]}
    with torpor.open(backend, sweeper=False, clock=torpor.ManualClock()) as mgr:
        ids = [mgr.create(data, timeout_ms=None).id for _ in range(300)]
        client = backend.client
        raw_keys = [b"get-ratio-raw:" + sid.encode() for sid in ids]
        for key in raw_keys:
            client.set(key, codec.encode_data(data))
        raw, ours = [], []
        for _ in range(9):
            raw.append(_per_call_us(lambda k: codec.decode_data(client.get(k)), raw_keys))
            ours.append(_per_call_us(lambda s: mgr.get(s).data, ids))  # type: ignore[union-attr]
        client.delete(*raw_keys)
        for sid in ids:
            mgr.delete(sid)
    low, high = statistics.median(raw), statistics.median(ours)
    print(f"raw GET + decode {low:.1f} µs, mgr.get {high:.1f} µs: {high / low:.3f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]))
