"""The ids walk (``torpor_iterate_ids``): a batch of live session ids, reading no record
into Python.

It walks the sessions database exactly as ``torpor_iterate`` does (same keys, same
order, the same re-seek past the last key, one read transaction per batch), so it
keeps that walk's exactly-once guarantee, and records without metadata are met too.
The transaction is a buffer one: each record is read in place, as a memoryview into
the map, and checked against the checksum in its metadata (``_meta.py``).  A match
means the record is one torpor vouched for, so the metadata says whether it has
expired (by the latest touch, which may live in the metadata alone: ``_touch.py``),
and nothing is decoded or copied but the id.  Anything else (no metadata,
metadata without a checksum, a checksum that does not match, a hibernated payload
larger than this manager's ``max_session_bytes``, an expiry time clamped at 0) is
decoded as a walk of whole records would (``Record.of``, then its data), and skipped
if it is damaged or foreign.
"""

from __future__ import annotations

from typing import Any

import lmdb

from torpor import Record
from torpor.errors import SerializationError
from torpor.plugins.lmdb._env import Txn
from torpor.plugins.lmdb._layout import Dbs
from torpor.plugins.lmdb._meta import EXPIRES, HIBERNATED, META, UNKNOWN_SIZE, vouches
from torpor.plugins.lmdb._touch import restamped

__all__ = ["ids_page", "resume"]


def resume(walk: lmdb.Cursor, cursor: bytes | None) -> bool:
    """Put ``walk`` on the first key after ``cursor`` (the last key a batch saw; None:
    the first key).  Each batch seeks again in a transaction of its own, so no snapshot
    outlives a batch.  False: no key is left."""
    if cursor is None:
        return bool(walk.first())
    more = bool(walk.set_range(cursor))
    if more and walk.key() == cursor:
        more = bool(walk.next())
    return more


def ids_page(
    txn: Txn, dbs: Dbs, cursor: bytes | None, batch_size: int, now_ms: int, limit: int
) -> tuple[list[str | bytes], bytes | None]:
    """One batch: the live ids among the next ``batch_size`` keys after ``cursor``, and
    the cursor to go on from (None: the walk is over).  ``txn`` is a buffer read
    transaction; nothing returned refers to it."""
    walk = txn.cursor(db=dbs.sessions)
    more = resume(walk, cursor)
    meta_db = dbs.meta
    ids: list[str | bytes] = []
    last = b""
    looked = 0
    while more and looked < batch_size:
        last = bytes(walk.key())
        looked += 1
        if _live(last, walk.value(), txn.get(last, db=meta_db), now_ms, limit):
            ids.append(_key(last))
        more = walk.next()
    return ids, (last if more else None)


def _live(key: bytes, blob: Any, raw: Any, now_ms: int, limit: int) -> bool:
    """Whether the record ``blob`` under ``key`` is intact and unexpired at ``now_ms``."""
    if raw is not None and vouches(raw, key, blob):
        _accessed, expires, _version, flags, _inc, inflated, _sum = META.unpack(raw)
        fits = not flags & HIBERNATED or 0 < inflated <= min(limit, UNKNOWN_SIZE - 1)
        if fits and not (flags & EXPIRES and expires == 0):  # 0 may be a clamped time
            return not flags & EXPIRES or now_ms <= expires
    # Decoded as the manager would get it: with a touch the metadata vouches for.
    return _decoded_live(key, restamped(key, bytes(blob), raw), now_ms, limit)


def _decoded_live(key: bytes, blob: bytes | Record, now_ms: int, limit: int) -> bool:
    try:
        record = Record.of(blob, key.decode("utf-8"))
        record.session_data(limit)
    except (SerializationError, UnicodeDecodeError):
        return False
    return not record.is_expired(now_ms)


def _key(key: bytes) -> str | bytes:
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return key
