"""What the benchmark knows about each backend beyond the public API.

Every backend gets the same manager-level cases.  A profile adds what only that
backend can have: a raw-engine baseline, a reference to an older code path, how to
fill its stores quickly, and defaults suited to its speed.  A new backend (redis,
mnesia_like, ...) adds one module defining ``PROFILE`` and one line in ``_MODULES``;
a backend with no profile runs the manager cases alone.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from torpor.cli.bench._runner import Block

if TYPE_CHECKING:
    from torpor.cli.bench._context import Context

__all__ = ["Profile", "RawEngine", "ScalingRaw", "Scratch", "profile_for"]


class RawEngine(Protocol):
    """The engine used directly, with torpor's codec (``encode_data``/``decode_data``):
    the floor torpor's own cost is compared with.  ``i`` picks a key among the
    ``count`` it was filled with (modulo)."""

    label: str  # "raw lmdb", "dict of bytes": names the baseline in the table

    def get(self, i: int) -> object:
        """Read and decode one record."""

    def put(self, i: int) -> None:
        """Encode and write a record under a new key (remembered for ``delete``)."""

    def update(self, i: int) -> None:
        """Read, decode, change one field, encode and write back, atomically."""

    def delete(self) -> None:
        """Delete the oldest key ``put`` wrote (``spare()`` says how many are left)."""

    def spare(self) -> int: ...

    def close(self) -> None: ...


RawFactory = Callable[[Mapping[str, str], int, tuple[dict[str, Any], ...]], RawEngine]
"""(the command's backend options, keys to fill, payloads) -> an engine filled."""

Scratch = Callable[[Mapping[str, str]], AbstractContextManager[dict[str, Any]]]
"""(the command's backend options) -> the options of a new, empty store, on entering;
the store is deleted on exit."""

ScalingRaw = Callable[["Context", int], Block]
"""(the run's context, a store size) -> a block timing the raw engine's walk and its
expiry sweep over a store of that size, per session, as its two cases in that order."""


@dataclass(frozen=True)
class Profile:
    raw: RawFactory | None = None
    # A backend object to measure beside the registered one (the 0.1 code path).
    reference: Callable[[], object] | None = None
    reference_label: str = ""
    # Stores live in a folder (each manager of the benchmark gets a new one).
    folder: bool = False
    # Options under which a store is filled before the measured manager reopens it
    # with the command's own; None: fill through the measured manager.
    fast_fill: Mapping[str, str] | None = None
    # Copies a filled store's folder, so a store is filled once and not per repetition.
    clone: Callable[[Path, Path], None] | None = None
    # Sessions live in this process's heap, so tracemalloc measures what they cost.
    heap: bool = False
    # Where a store is neither a folder nor the process's heap (a server's namespace):
    # storage of its own for each manager of the benchmark (``scratch_storage``).
    scratch: Scratch | None = None
    # The raw engine's floor of the size-dependent cases: the walks are divided by
    # its walk, the expiry sweep by its walk and by its sweep (``scaling_blocks``).
    scaling_raw: ScalingRaw | None = None
    calls: int = 10_000
    write_calls: int = 1_000


_MODULES = {
    "ets_like": "torpor.cli.bench._ets_like",
    "lmdb": "torpor.cli.bench._lmdb",
    "mnesia_like": "torpor.cli.bench._mnesia_like",
    "redis": "torpor.cli.bench._redis",
}


def profile_for(backend: str) -> Profile:
    module = _MODULES.get(backend)
    if module is None:
        return Profile()
    profile = importlib.import_module(module).PROFILE
    assert isinstance(profile, Profile)
    return profile
