"""lmdb: raw py-lmdb with torpor's codec as the floor, and fast store filling.

The raw environment is opened by the very function the backend opens its own with
(same ``sync``/``metasync`` for the durability asked, ``readahead=False``, no cached
read transactions), so the ratio is torpor's code against the engine, never two
configurations of the engine.  Like a user of raw lmdb it stores only the encoded
data: no metadata, no expiry, no mailbox.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torpor import codec
from torpor.cli.bench._profiles import Profile
from torpor.errors import ConfigError

__all__ = ["PROFILE", "LmdbEngine", "clone_store"]

_RAW_MAP_SIZE = 1 << 32  # never grows mid-run: a resize would be timed as a put


class LmdbEngine:
    """Raw py-lmdb: one read transaction per get, one write transaction per write."""

    label = "raw lmdb"

    def __init__(
        self, options: Mapping[str, str], count: int, data: tuple[dict[str, Any], ...]
    ) -> None:
        from torpor.plugins.lmdb._env import DURABILITY, EnvConfig, _open

        durability = options.get("durability", "sync")  # the backend's default
        if durability not in DURABILITY:
            raise ConfigError(f"durability must be one of {', '.join(DURABILITY)}")
        self._folder = tempfile.TemporaryDirectory(prefix="torpor-raw-", ignore_cleanup_errors=True)
        config = EnvConfig(durability, _RAW_MAP_SIZE, max_readers=126, max_dbs=1)
        self._env = _open(Path(self._folder.name), config, _RAW_MAP_SIZE)
        self._data = data
        self._keys = [f"raw-{i}".encode() for i in range(count)]
        with self._env.begin(write=True) as txn:
            for i, key in enumerate(self._keys):
                txn.put(key, codec.encode_data(data[i % len(data)]))
        self._new: deque[bytes] = deque()
        self._next = 0

    def get(self, i: int) -> object:
        with self._env.begin() as txn:
            blob = txn.get(self._keys[i % len(self._keys)])
        return codec.decode_data(_found(blob))

    def put(self, i: int) -> None:
        key = f"new-{self._next}".encode()
        self._next += 1
        blob = codec.encode_data(self._data[i % len(self._data)])
        with self._env.begin(write=True) as txn:
            txn.put(key, blob)
        self._new.append(key)

    def update(self, i: int) -> None:
        key = self._keys[i % len(self._keys)]
        with self._env.begin(write=True) as txn:
            data = codec.decode_data(_found(txn.get(key)))
            data["turn"] = i
            txn.put(key, codec.encode_data(data))

    def delete(self) -> None:
        key = self._new.popleft()
        with self._env.begin(write=True) as txn:
            txn.delete(key)

    def spare(self) -> int:
        return len(self._new)

    def close(self) -> None:
        self._env.close()
        self._folder.cleanup()


def _found(blob: bytes | None) -> bytes:
    if blob is None:  # only the benchmark writes this environment
        raise RuntimeError("a key the raw lmdb baseline wrote is missing")
    return blob


def clone_store(source: Path, target: Path) -> None:
    """Copy a closed environment (its data file; the lock file is per opening)."""
    for path in source.iterdir():
        if path.is_file() and path.name != "lock.mdb":
            shutil.copyfile(path, target / path.name)


PROFILE = Profile(
    raw=LmdbEngine,
    folder=True,
    # Filling only: the measured manager reopens the store with the command's options.
    fast_fill={"durability": "nosync"},
    clone=clone_store,
    calls=5_000,
    # A commit with durability=sync waits for the disk (~1-7 ms here): fewer per block.
    write_calls=100,
)
