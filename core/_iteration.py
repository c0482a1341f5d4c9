"""From what a backend returned to ``Record`` values, and walks that survive bad data.

Backends give back bytes or records exactly as stored; this module is where the core
decides whether a value is an intact torpor record under its own key (docs/contract.md §8,
"damaged or foreign data").  Point reads (``get``, ``peek``, ``update``) raise a
``SerializationError`` naming the id; walks, counts, ``find`` and sweeps skip the value
instead, log it once and count it, so that one bad record never stops them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Final

from torpor._binding import Binding
from torpor._ids import key_to_id
from torpor._record import Record
from torpor.errors import SerializationError

__all__ = ["DamageLog", "as_record", "intact", "walk"]

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
    or foreign values skipped in that batch."""
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
        yield records, skipped
