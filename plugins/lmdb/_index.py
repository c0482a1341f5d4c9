"""Secondary indexes on data fields, for ``find`` (capability SECONDARY_INDEX).

An entry is ``H(field) + H(canonical value) + id`` (8 + 16 bytes of BLAKE2b, then the
id), so keys stay under LMDB's 511-byte limit whatever the field or value.  Values are
made canonical first so that the index agrees with Python's ``==``, which ``find`` is
defined by: ``1``, ``1.0`` and ``True`` index alike, as do ``[1]`` and ``(1.0,)``.  A
hash collision can only add a candidate; the manager re-checks every candidate
against the criteria, so it can never change a result.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

__all__ = ["entry_prefix", "field_hash", "session_entries"]

_encode = msgspec.msgpack.Encoder().encode


def _canonical(value: Any) -> Any:
    if isinstance(value, bool | int | float) and not isinstance(value, bool | int):
        return int(value) if value.is_integer() else value  # 1.0 == 1
    if isinstance(value, bool):
        return int(value)  # True == 1
    if isinstance(value, list | tuple):
        return ["L", *map(_canonical, value)]
    if isinstance(value, dict):
        return ["D", *sorted(([k, _canonical(v)] for k, v in value.items()), key=repr)]
    return value


def field_hash(field: str) -> bytes:
    return hashlib.blake2b(field.encode("utf-8"), digest_size=8).digest()


def entry_prefix(field: str, value: Any) -> bytes:
    digest = hashlib.blake2b(_encode(_canonical(value)), digest_size=16).digest()
    return field_hash(field) + digest


def session_entries(fields: list[str], data: dict[str, Any], key: bytes) -> list[bytes]:
    """The index keys of one session for the indexed ``fields`` it has."""
    return [entry_prefix(f, data[f]) + key for f in fields if f in data]
