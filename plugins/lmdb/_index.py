"""Secondary indexes on data fields, for ``find`` (capability SECONDARY_INDEX).

An entry is ``H(field) + canonical_key(value) + id``: 8 bytes of BLAKE2b of the field
name, the 16-byte key of ``torpor.indexing`` (equal values, ``1``, ``1.0`` and ``True``
say, share it, so the index agrees with the ``==`` that defines ``find``), then the
id.  Keys stay under LMDB's 511-byte limit whatever the field or value.  A hash
collision can only add a candidate; the manager re-checks every candidate against
the criteria, so it can never change a result.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any, Final

from torpor.indexing import ENTRY_BYTES, index_entry

__all__ = ["ENTRY_PREFIX", "entry_prefix", "join", "session_entries", "split"]

_LEN = struct.Struct(">H")
ENTRY_PREFIX: Final = ENTRY_BYTES  # bytes before the id: torpor.indexing.index_entry


def entry_prefix(field: str, value: Any) -> bytes:
    """The prefix of every entry for ``data[field] == value``.  ``TypeError`` or
    ``ValueError`` for a value no session can hold (it has no key)."""
    return index_entry(field, value)


def session_entries(fields: Iterable[str], data: dict[str, Any], key: bytes) -> list[bytes]:
    """The index entries of one session for the indexed ``fields`` it has.  A value
    that has no key (foreign data that decoded to something a session cannot hold)
    is left out: it cannot equal a criterion that has one."""
    entries = []
    for field in fields:
        if field in data:
            try:
                entries.append(entry_prefix(field, data[field]) + key)
            except (TypeError, ValueError):
                continue
    return entries


def join(entries: list[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(e)) + e for e in entries)


def split(packed: bytes) -> list[bytes]:
    """The entries ``join`` packed; a damaged tail (a length running past the end) is
    left out, never an error."""
    entries, at, end = [], 0, len(packed)
    while at + 2 <= end:
        (size,) = _LEN.unpack_from(packed, at)
        if at + 2 + size > end:
            break
        entries.append(packed[at + 2 : at + 2 + size])
        at += 2 + size
    return entries
