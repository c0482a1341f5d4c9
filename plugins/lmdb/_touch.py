"""Touch-only writes: a store that moves only ``last_accessed`` rewrites the metadata
entry and the idle and expiry index entries, never the record.

A touch is the most frequent write (the manager buffers a read's refresh of
``last_accessed`` and writes them in batches: ``torpor._touches``).  Rewriting the
record for it meant re-encoding a ~3 KB envelope and writing it to new overflow
pages, which a ``durability="sync"`` commit must then flush.  So when the record
``Store.put`` is given is the stored one with only a later ``last_accessed`` (same
id, incarnation, version, creation time, timeout, hibernated state and payload bytes),
the record stays as the last data write left it and only its 41-byte entry changes:
the new time and expiry, the flag ``TOUCHED``, and a new checksum over the unchanged
record and the new entry.

Readers go by the entry only when it vouches for that record: its checksum matches
the record, and the record's envelope agrees with it on everything but an older
``last_accessed``.  Every value handed to the manager (``fetch``, ``iterate``,
``find``'s candidates, the ``current`` of ``transact``) then carries the entry's
time (:func:`restamped`), and so does the ids walk, which reads the entry's expiry.
An entry that cannot vouch (damaged, without a checksum, of torpor 0.1, or a record
changed behind torpor's back) is ignored: the envelope decides, as before, and a touch
of such a record rewrites it in full (:func:`touch_entry` declines), which writes an
entry that can vouch for the next touch.

Choices, and why:

* The flag costs untouched reads one byte's look: without it, every read would decode
  the envelope's header to compare times.  Readers check the checksum only for a
  flagged entry (1 µs for 3 KB); the write checks it before every touch, so that an
  entry never comes to vouch for a record no one checked.
* A touched active record is handed over as a ``Record`` (built from the envelope's
  fields with the entry's time, the payload bytes as stored, not decoded): the
  checksum proves the bytes are what torpor wrote, with data it had encoded or
  decoded, which is what the manager's own check of stored bytes would establish.
  A hibernated one is handed over as re-encoded bytes instead: whether its payload
  inflates within *this* manager's ``max_session_bytes`` is for the manager to check.
* Envelopes are read with ``codec.envelope_fields`` (one typed msgspec decode, types
  and ranges checked in C), not ``decode_envelope``: same verdicts on the current
  format, a fifth of the time.  A record in an older format (torpor 0.1's) is never
  touched this way: :func:`touch_entry` declines, and the full write replaces it.
"""

from __future__ import annotations

import zlib
from typing import Final

from torpor import Record, codec
from torpor.plugins.lmdb._meta import (
    EXPIRES,
    FLAGS_AT,
    HEAD,
    HIBERNATED,
    META,
    TOUCHED,
    State,
    blob_sum,
    clamp,
    incarnation_bits,
    pack,
    summed,
)

__all__ = ["may_be_touch", "restamped", "touch_entry"]

_LIMIT: Final = 2**62  # what the envelope's times may be (codec's bound): never clamped


def restamped(key: bytes, blob: bytes, raw: bytes | memoryview | None) -> bytes | Record:
    """The value a reader gets for record ``blob`` stored under ``key`` with metadata
    ``raw``: ``blob`` itself, unless the entry holds a touch it can vouch for; then the
    record carrying the entry's ``last_accessed``: a ``Record`` (which the manager
    does not decode again: the checksum proves the bytes are what torpor wrote, with
    data it had encoded or decoded), or for a hibernated one, whose inflated size
    the manager must still check against its ``max_session_bytes``, its bytes."""
    if raw is None or len(raw) != META.size or not raw[FLAGS_AT] & TOUCHED:
        return blob  # the usual case costs one byte's look
    accessed, expires, version, flags, incarnation, _inflated, checksum = META.unpack(raw)
    if zlib.crc32(raw[: HEAD.size], blob_sum(key, blob)) != checksum:  # _meta.vouches
        return blob  # the record or the entry is damaged: the envelope decides
    found = codec.envelope_fields(blob)
    if found is None:
        return blob
    (sid, created, was, timeout, version_, hibernated, incarnation_), payload = found
    # (Both times are below 2**62 here: their sum needs no clamping to match the entry.)
    if (
        version_ != version
        or incarnation_bits(incarnation_) != incarnation
        or not was < accessed < _LIMIT
        or flags != _flags(hibernated, timeout) | TOUCHED
        or (timeout is not None and expires != accessed + timeout)
        or sid.encode("utf-8", "surrogatepass") != key
    ):
        return blob
    record = Record(sid, created, accessed, timeout, version_, hibernated, incarnation_, payload)
    return record.blob if hibernated else record


def may_be_touch(stored: State, record: Record) -> bool:
    """Whether storing ``record`` over a record whose metadata says ``stored`` might be
    a touch: decided from the metadata alone, so a data write reads nothing more."""
    return (
        record.version == stored.version
        and incarnation_bits(record.incarnation) == stored.incarnation
        and _flags(record.hibernated, record.timeout_ms) == stored.flags & ~TOUCHED
        and record.payload is not None
        and 0 <= record.last_accessed < _LIMIT
    )


def touch_entry(
    key: bytes, blob: bytes | None, raw: bytes, record: Record
) -> tuple[State, bytes] | None:
    """If ``raw`` vouches for ``blob`` (the stored record and its metadata), and
    ``record`` is ``blob`` with only a later (or the same) ``last_accessed``: the new
    state and metadata entry, which is all that needs writing.  None: write the record.
    Call it only when :func:`may_be_touch`."""
    if blob is None or len(raw) != META.size:
        return None
    record_sum = blob_sum(key, blob)
    if not summed(raw, record_sum):
        return None  # the entry cannot vouch: the record is rewritten, as before
    found = codec.envelope_fields(blob)
    if found is None:
        return None
    (sid, created, was, timeout, version, hibernated, incarnation), payload = found
    if (
        sid != record.id
        or created != record.created_at
        or timeout != record.timeout_ms
        or version != record.version
        or hibernated != record.hibernated
        or incarnation != record.incarnation
        or was > record.last_accessed  # the envelope's time is one no touch goes below
        or payload != record.payload
    ):
        return None
    accessed = record.last_accessed
    flags = _flags(hibernated, timeout) | (TOUCHED if accessed > was else 0)
    expires = 0 if timeout is None else clamp(accessed + timeout)
    state = State(accessed, expires, version, flags, incarnation_bits(incarnation))
    inflated: int = META.unpack(raw)[5]  # the same payload: the same inflated size
    return state, pack(state, inflated=inflated, vouched_sum=record_sum)


def _flags(hibernated: bool, timeout: int | None) -> int:
    return (HIBERNATED if hibernated else 0) | (0 if timeout is None else EXPIRES)
