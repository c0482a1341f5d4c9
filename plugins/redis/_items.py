"""What one record change sends to the ``commit`` step (``_scripts.py``): ten fields."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from typing import Final

from torpor import Record, Removal
from torpor.errors import SerializationError
from torpor.indexing import index_entry

__all__ = [
    "GONE",
    "HEAD",
    "KEEP",
    "MAGIC",
    "MAX_SCORE",
    "Item",
    "entries_of",
    "item",
    "member",
    "packed",
    "sha",
    "unwrap",
]

MAX_SCORE: Final = 1 << 53  # doubles are exact up to here; later deadlines never come
KEEP: Final = "="
"""Index entries unchanged: the data is the one already indexed."""
GONE: Final = object()
"""A removal by ``torpor_delete`` (reason ``deleted``)."""

HEAD: Final = 34
"""Bytes of a stored record's head: ``t2``, incarnation, version, deadline, proof
(``_scripts.py``)."""
MAGIC: Final = b"t2"
_INT: Final = struct.Struct(">q")

Item = tuple[bytes, list[bytes | str]]


def packed(number: int) -> bytes:
    """An incarnation or version as the head holds it (8 bytes, signed big-endian)."""
    return _INT.pack(number)


def unwrap(value: bytes) -> bytes:
    """The blob of a stored value: without its head.  A value without one (planted or
    foreign) is returned as it is, for the manager to judge."""
    if value[:2] == MAGIC and len(value) > HEAD:
        return value[HEAD:]
    return value


def item(
    session_id: str,
    read: bytes | None,
    result: object,
    entries: str,
    *,
    unconditional: bool = False,
) -> Item:
    """``result`` (a Record, a Removal or ``GONE``) as commit fields; ``read`` is the
    value the caller's decision was based on (compared at commit time)."""
    key = member(session_id)
    # The commit step hashes what it finds the same way: nothing, an empty value and a
    # key of another type all read as "".
    expected = "*" if unconditional else ("" if not read else sha(read))
    if isinstance(result, Record):
        idle = "" if result.hibernated else str(result.last_accessed)
        deadline = result.expires_at()
        expiry = "" if deadline is None else str(min(deadline, MAX_SCORE))
        # The head after the incarnation: version and deadline (MAX_SCORE for none).
        rest = packed(result.version) + packed(
            MAX_SCORE if deadline is None else min(deadline, MAX_SCORE)
        )
        inc = packed(result.incarnation)
        return key, [key, expected, "S", result.blob, idle, expiry, inc, rest, entries, ""]
    if result is GONE or isinstance(result, Removal):
        reason = result.reason if isinstance(result, Removal) else "deleted"
        return key, [key, expected, "D", b"", "", "", b"", b"", "", reason]
    raise SerializationError(
        f"a transaction function returned {type(result).__name__}, not a Record, a Removal or None"
    )


def entries_of(fields: Iterable[str], record: Record, limit: int) -> str:
    """The record's index entries for ``fields``, hex and space-separated; none for
    data that does not decode (the manager reports it) or values no session holds."""
    fields = list(fields)
    if not fields:
        return ""
    try:
        data = record.session_data(limit)
    except SerializationError:
        return ""
    found = []
    for field in fields:
        if field in data:
            try:
                found.append(index_entry(field, data[field]).hex())
            except (TypeError, ValueError):
                continue
    return " ".join(found)


def same_data(read: bytes | None, result: Record) -> bool:
    """Whether ``result`` holds the data of the record read (a stored value, head
    and all: a touch, hibernation or wake): its index entries stand."""
    if read is None:
        return False
    try:
        before = Record.of(unwrap(read))
    except SerializationError:
        return False
    return before.incarnation == result.incarnation and before.version == result.version


def sha(value: bytes) -> str:
    return hashlib.sha1(value, usedforsecurity=False).hexdigest()


def member(session_id: str) -> bytes:
    return session_id.encode("utf-8")
