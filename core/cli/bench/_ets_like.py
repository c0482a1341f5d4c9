"""ets_like: a plain dict of encoded bytes as the raw floor, and the 0.1 code path."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from torpor import codec
from torpor.cli.bench._legacy import legacy_backend
from torpor.cli.bench._profiles import Profile

__all__ = ["PROFILE", "DictEngine"]


class DictEngine:
    """What a user would write instead of an in-process store: ``dict[str, bytes]``
    with torpor's codec, no lock, no metadata, no expiry."""

    label = "dict of bytes"

    def __init__(
        self, options: Mapping[str, str], count: int, data: tuple[dict[str, Any], ...]
    ) -> None:
        self._data = data
        self._keys = [f"raw-{i}" for i in range(count)]
        self._store = {
            key: codec.encode_data(data[i % len(data)]) for i, key in enumerate(self._keys)
        }
        self._new: deque[str] = deque()
        self._next = 0

    def get(self, i: int) -> object:
        return codec.decode_data(self._store[self._keys[i % len(self._keys)]])

    def put(self, i: int) -> None:
        key = f"new-{self._next}"
        self._next += 1
        self._store[key] = codec.encode_data(self._data[i % len(self._data)])
        self._new.append(key)

    def update(self, i: int) -> None:
        key = self._keys[i % len(self._keys)]
        data = codec.decode_data(self._store[key])
        data["turn"] = i
        self._store[key] = codec.encode_data(data)

    def delete(self) -> None:
        del self._store[self._new.popleft()]

    def spare(self) -> int:
        return len(self._new)

    def close(self) -> None:
        self._store.clear()


PROFILE = Profile(
    raw=DictEngine,
    reference=legacy_backend,
    reference_label="0.1 path",
    heap=True,
    calls=20_000,
    write_calls=2_000,
)
