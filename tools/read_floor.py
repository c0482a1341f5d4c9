"""What any ets_like read must pay, whatever the stored form: the fresh dict a caller
gets.  Prints, per chat-like session over N distinct sessions (a cold cache, like
``torpor bench``'s get), the cost of decoding stored msgpack (today's read) and of
copying a live dict (torpor 0.1's read), interleaved, best of 5.  Their ratio bounds
how much faster a read can get by changing the stored form (docs/performance.md).

    python tools/read_floor.py [N]
"""

from __future__ import annotations

import random
import sys
import timeit

from torpor import codec
from torpor.sample import chat_session


def main(count: int) -> None:
    data = [chat_session(random.Random(i)) for i in range(count)]
    payloads = [codec.encode_data(d) for d in data]
    decode: list[float] = []
    copy: list[float] = []
    for _ in range(5):
        decode.append(timeit.timeit(lambda: [codec.decode_data(p) for p in payloads], number=1))
        copy.append(timeit.timeit(lambda: [codec.copy_data(d) for d in data], number=1))
    best_decode, best_copy = min(decode) / count * 1e6, min(copy) / count * 1e6
    print(
        f"{count:,} sessions: decode {best_decode:.1f} µs, copy {best_copy:.1f} µs, "
        f"copy / decode {best_copy / best_decode:.2f}x"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
