"""From what a backend returned to ``Record`` values, and walks that survive bad data.

Backends give back bytes or records exactly as stored; this module is where the core
decides whether a value is an intact torpor record under its own key (docs/contract.md §8,
"damaged or foreign data").  Point reads (``get``, ``peek``, ``update``) raise a
``SerializationError`` naming the id; walks, counts, ``find`` and sweeps skip the value
instead, log it once and count it, so that one bad record never stops them.

``ids()`` on a backend with ``torpor_iterate_ids`` does not read records at all: the
backend skips damaged and expired ones itself (:func:`walk_ids`), and ``stats()``,
which still walks whole records, is where that damage is counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, Final

from torpor._binding import Binding
from torpor._ids import key_to_id
from torpor._record import Record
from torpor.errors import SerializationError

__all__ = ["DamageLog", "as_record", "intact", "walk", "walk_ids"]

log = logging.getLogger("torpor")

_LOGGED_LIMIT: Final = 10_000  # ids remembered as already logged; past it, one summary


def as_record(value: object, key: str) -> Record | None:
    """What a backend returned for ``key`` -> a Record (None stays None).

    ``SerializationError`` (naming ``key``) if it is not an intact record of ``key``:
    :meth:`Record.of`, the check backends use too, with the key in the message.
    """
    if value is None:
        return None
    try:
        return Record.of(value, key)  # type: ignore[arg-type]
    except SerializationError as exc:
        raise SerializationError(f"session {key!r}: {exc}") from None


class DamageLog:
    """Logs each damaged or foreign key once per manager."""

    def __init__(self) -> None:
        self._logged: set[str | bytes] = set()
        self._overflowed = False

    def note(self, key: str | bytes, why: str) -> None:
        if key in self._logged:
            return
        if len(self._logged) >= _LOGGED_LIMIT:
            if not self._overflowed:
                self._overflowed = True
                log.warning(
                    "more than %d damaged or foreign records; no longer logging each",
                    _LOGGED_LIMIT,
                )
            return
        self._logged.add(key)
        log.warning("skipping stored value under %r: %s", key, why)


def intact(value: object, key: str, limit: int) -> Record | None:
    """``as_record``, and for a stored blob also its data: a record whose payload does
    not decode is damaged too (docs/contract.md §8).  Records an in-process backend holds were
    built by the manager and are not decoded again."""
    record = as_record(value, key)
    if record is not None and type(value) is not Record:
        record.check(limit)
    return record


def walk(
    binding: Binding, batch_size: int, damage: DamageLog, limit: int
) -> Iterator[tuple[list[Record], int]]:
    """Batches of intact records (expired ones included) with the number of damaged
    or foreign values skipped in that batch.  As in :func:`walk_ids`, a consumer must
    be done with a batch when it asks for the next: its list is emptied then."""
    for items in binding.walk(batch_size):
        records: list[Record] = []
        skipped = 0
        for key, value in items:
            sid = key_to_id(key)
            if sid is None:
                damage.note(key, "the key is not a valid session id (foreign data)")
                skipped += 1
                continue
            try:
                record = intact(value, sid, limit)
            except SerializationError as exc:
                damage.note(sid, str(exc))
                skipped += 1
                continue
            if record is not None:
                records.append(record)
        del items  # the stored values: not held while the next batch is read
        yield records, skipped
        records.clear()


def walk_ids(
    binding: Binding, batch_size: int, clock: Callable[[], int], damage: DamageLog
) -> Iterator[list[str]]:
    """Batches of the ids of live sessions from ``torpor_iterate_ids`` (the binding
    must have it), which skips damaged and expired records itself; keys that are not
    valid ids are dropped and logged here, as :func:`walk` does.  Each backend call
    gets the time it is made: a slow consumer does not make later batches judge
    expiry by an old clock.  A consumer must be done with a batch when it asks for
    the next: the list is emptied then, so that two batches are never held at once
    (the consumer's reference to the last one lives on while it waits)."""
    iterate_ids = binding.iterate_ids
    if iterate_ids is None:
        raise AssertionError("walk_ids needs a backend with torpor_iterate_ids")
    cursor: Any = None
    while True:
        keys, cursor = iterate_ids(cursor, batch_size, clock())
        ids: list[str] = []
        for key in keys:
            sid = key_to_id(key)
            if sid is None:
                damage.note(key, "the key is not a valid session id (foreign data)")
            else:
                ids.append(sid)
        del keys
        if ids:
            yield ids
            ids.clear()
        if cursor is None:
            return
