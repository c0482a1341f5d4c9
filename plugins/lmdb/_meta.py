"""A session's entry in ``<ns>.meta``, and the checksum that lets a walk trust a record
without decoding it.

Three formats, told apart by their length::

    41 bytes  last_accessed, expires_at, version, flags, incarnation, inflated, checksum
    33 bytes  the same without inflated and checksum: torpor 0.2.0.dev before checksums,
              and now any record torpor does not vouch for
    25 bytes  torpor 0.1: no incarnation either (read from the record's envelope)

``checksum`` is CRC-32 of the stored record followed by the first 37 bytes of the
entry, so it breaks when either changes.  torpor writes one only for a record it
*vouches* for (``Store.put``): a record whose data the manager encoded (a new version
or incarnation), one derived by a touch, hibernation or wake from a record vouched for
in the same transaction, or one whose data it has just decoded.  So a record that
matches its checksum is intact, and its entry says when it expires: ``ids()``
(``_walk.py``) reads neither its payload nor its envelope.  A record another program
wrote (no entry, or one whose checksum no longer matches), a flipped byte in the
record or the entry, and an entry without a checksum send the walk back to decoding
that record, as a walk of whole records would.  (A foreign value that happens to
match a 32-bit checksum is the one case this misses: one in four billion.)

``inflated`` is what a hibernated record's payload inflates to (0 for an active one):
a manager whose ``max_session_bytes`` is below it must treat the record as damaged,
as decoding it would, so the walk decodes it then.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final, NamedTuple

from torpor import Record, codec
from torpor.errors import SerializationError

__all__ = [
    "EXPIRES",
    "HEAD",
    "HIBERNATED",
    "META",
    "META_UNSUMMED",
    "META_V01",
    "UNKNOWN_SIZE",
    "State",
    "decodes",
    "inflated_size",
    "pack",
    "parse",
    "readable",
    "vouches",
]

META: Final = struct.Struct(">QQQBQII")
HEAD: Final = struct.Struct(">QQQBQI")  # what the checksum covers besides the record
META_UNSUMMED: Final = struct.Struct(">QQQBQ")
META_V01: Final = struct.Struct(">QQQB")
HIBERNATED: Final = 1
EXPIRES: Final = 2
UNKNOWN_SIZE: Final = (1 << 32) - 1  # inflated size not known: always decode to tell
_SUM: Final = struct.Struct(">I")


class State(NamedTuple):
    """What the metadata of a session says (or its envelope, when that is trusted)."""

    accessed: int
    expires: int
    version: int
    flags: int
    incarnation: int | None


def readable(raw: bytes) -> bool:
    """Whether ``raw`` has the length of one of the formats (else it is damaged)."""
    return len(raw) in (META.size, META_UNSUMMED.size, META_V01.size)


def parse(raw: bytes) -> State | None:
    """The state an entry of the 41- or 33-byte format holds (None for any other)."""
    if len(raw) == META.size:
        return State(*META.unpack(raw)[:5])
    if len(raw) == META_UNSUMMED.size:
        return State(*META_UNSUMMED.unpack(raw))
    return None


def pack(state: State, vouched_blob: bytes | None = None, inflated: int = 0) -> bytes:
    """The entry for ``state``: with a checksum of ``vouched_blob`` (the stored record,
    when torpor vouches for it), else without one."""
    incarnation = 0 if state.incarnation is None else state.incarnation
    fields = (state.accessed, state.expires, state.version, state.flags, incarnation)
    if vouched_blob is None:
        return META_UNSUMMED.pack(*fields)
    head = HEAD.pack(*fields, inflated)
    return head + _SUM.pack(zlib.crc32(head, zlib.crc32(vouched_blob)))


def vouches(raw: bytes | memoryview, blob: bytes | memoryview) -> bool:
    """Whether entry ``raw`` carries a checksum, and ``blob`` (with the entry) still
    matches it.  Reads ``blob`` in place: a memoryview into the map is not copied."""
    if len(raw) != META.size:
        return False
    stored: int = _SUM.unpack_from(raw, HEAD.size)[0]
    return zlib.crc32(raw[: HEAD.size], zlib.crc32(blob)) == stored


def inflated_size(record: Record) -> int:
    """``inflated`` for ``record``'s entry: the size its hibernated payload's frame
    announces (``UNKNOWN_SIZE`` if none, or too large for the field), 0 if active."""
    if not record.hibernated or record.payload is None:
        return 0
    payload = record.payload
    size = codec.compressed_saving(payload) + len(payload)
    return size if 0 < size < UNKNOWN_SIZE else UNKNOWN_SIZE


def decodes(record: Record, limit: int) -> bool:
    """Whether ``record``'s data decodes (within ``limit`` if hibernated)."""
    try:
        record.session_data(limit)
    except SerializationError:
        return False
    return True
