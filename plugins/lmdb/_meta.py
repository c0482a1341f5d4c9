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
in the same transaction, or one whose data it has just decoded.  A touch written to
the entry alone (``_touch.py``) keeps the record and checks the old entry against it
first, so the new entry vouches exactly when the old one did.  So a record that
matches its checksum is intact, and its entry says when it expires: ``ids()``
(``_walk.py``) reads neither its payload nor its envelope.  A record another program
wrote (no entry, or one whose checksum no longer matches), a flipped byte in the
record or the entry, and an entry without a checksum send the walk back to decoding
that record, as a walk of whole records would.  (A foreign value that happens to
match a 32-bit checksum is the one case this misses: one in four billion.)

``inflated`` is what a hibernated record's payload inflates to (0 for an active one):
a manager whose ``max_session_bytes`` is below it must treat the record as damaged,
as decoding it would, so the walk decodes it then.

``flags`` holds ``HIBERNATED`` and ``EXPIRES`` as the record's envelope says, and
``TOUCHED`` when a touch was written to this entry alone (``_touch.py``): its
``last_accessed`` (and ``expires_at``) are then newer than the envelope's, and the
entry, while its checksum matches, is what readers go by.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final, NamedTuple

from torpor import Record, codec
from torpor.errors import SerializationError

__all__ = [
    "EXPIRES",
    "FLAGS_AT",
    "HEAD",
    "HIBERNATED",
    "META",
    "META_UNSUMMED",
    "META_V01",
    "TOUCHED",
    "UNKNOWN_SIZE",
    "State",
    "blob_sum",
    "clamp",
    "decodes",
    "incarnation_bits",
    "inflated_size",
    "pack",
    "parse",
    "readable",
    "state_of",
    "summed",
    "vouches",
]

META: Final = struct.Struct(">QQQBQII")
HEAD: Final = struct.Struct(">QQQBQI")  # what the checksum covers besides the record
META_UNSUMMED: Final = struct.Struct(">QQQBQ")
META_V01: Final = struct.Struct(">QQQB")
HIBERNATED: Final = 1
EXPIRES: Final = 2
TOUCHED: Final = 4  # last_accessed is newer than the record's envelope: see _touch.py
FLAGS_AT: Final = 24  # offset of the flags byte in every format
_MAX: Final = (1 << 64) - 1
UNKNOWN_SIZE: Final = (1 << 32) - 1  # inflated size not known: always decode to tell
_SUM: Final = struct.Struct(">I")


class State(NamedTuple):
    """What the metadata of a session says (or its envelope, when that is trusted)."""

    accessed: int
    expires: int
    version: int
    flags: int
    incarnation: int | None


def clamp(value: int) -> int:
    """``value`` within what the entry's unsigned 8-byte fields hold."""
    return min(max(value, 0), _MAX)


def incarnation_bits(incarnation: int) -> int:
    # torpor draws 63 bits; a 0.1 record's incarnation is its created_at.  Either fits.
    return incarnation & _MAX


def state_of(record: Record) -> State:
    """The entry ``record`` calls for, as its own envelope says it (never ``TOUCHED``)."""
    timeout = record.timeout_ms
    flags = (HIBERNATED if record.hibernated else 0) | (0 if timeout is None else EXPIRES)
    expires = 0 if timeout is None else clamp(record.last_accessed + timeout)
    return State(
        clamp(record.last_accessed),
        expires,
        clamp(record.version),
        flags,
        incarnation_bits(record.incarnation),
    )


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


def pack(
    state: State,
    vouched_blob: bytes | None = None,
    inflated: int = 0,
    *,
    key: bytes = b"",
    vouched_sum: int | None = None,
) -> bytes:
    """The entry for ``state``: with a checksum of ``vouched_blob`` (the stored record,
    when torpor vouches for it; or ``vouched_sum``, its ``blob_sum`` if already
    computed), else without one."""
    incarnation = 0 if state.incarnation is None else state.incarnation
    fields = (state.accessed, state.expires, state.version, state.flags, incarnation)
    if vouched_sum is None:
        if vouched_blob is None:
            return META_UNSUMMED.pack(*fields)
        vouched_sum = blob_sum(key, vouched_blob)
    head = HEAD.pack(*fields, inflated)
    return head + _SUM.pack(zlib.crc32(head, vouched_sum))


def blob_sum(key: bytes, blob: bytes | memoryview) -> int:
    """The record's part of a checksum, its key included (a record copied with its
    entry under another key is not vouched for): computed once, it serves both to
    check the stored entry (:func:`summed`) and to write the next one (``pack``)."""
    return zlib.crc32(blob, zlib.crc32(key))


def summed(raw: bytes | memoryview, record_sum: int) -> bool:
    """:func:`vouches`, given the record's :func:`blob_sum`."""
    if len(raw) != META.size:
        return False
    stored: int = _SUM.unpack_from(raw, HEAD.size)[0]
    return zlib.crc32(raw[: HEAD.size], record_sum) == stored


def vouches(raw: bytes | memoryview, key: bytes, blob: bytes | memoryview) -> bool:
    """Whether entry ``raw`` carries a checksum, and ``blob`` stored under ``key``
    (with the entry) still matches it.  Reads ``blob`` in place: a memoryview into the
    map is not copied."""
    return len(raw) == META.size and summed(raw, blob_sum(key, blob))


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
