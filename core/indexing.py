"""Index keys that agree with Python's ``==``, for backends with secondary indexes.

``Manager.find(field=value)`` is defined by ``data[field] == value``.  A backend that
answers it from an index must file equal values under one key, or ``find`` misses
sessions.  Python's equality crosses types: ``1 == 1.0 == True``, ``0 == -0.0``,
``{"a": 1} == {"a": 1.0}``, and an integer equals a float only when the float is
exactly that integer (``10**20 == 1e20`` but ``10**30 != 1e30``, because ``1e30`` is
``1000000000000000019884624838656``).  :func:`canonical_key` folds every value a
session can hold into one fixed-length key that respects all of that::

    >>> from torpor.indexing import canonical_key
    >>> canonical_key(1) == canonical_key(1.0) == canonical_key(True)
    True
    >>> canonical_key([1, {"a": 2}]) == canonical_key((1.0, {"a": 2.0}))
    True
    >>> canonical_key(10**30) == canonical_key(1e30)
    False

The promise is one way: ``a == b`` implies ``canonical_key(a) == canonical_key(b)``.
Unequal values may share a key (a list and a tuple with equal items do, on purpose,
since a stored tuple comes back as a list; and a hash can collide), so an index built
on these keys yields *candidates*, and the manager re-checks every candidate against
the criteria.  A collision can therefore add work, never change a result.

The canonical form, hashed with BLAKE2b (16 bytes), is a tagged byte string:

========================  ==================================================
value                     canonical form
========================  ==================================================
``None``                  ``N``
``bool``, ``int``         ``I`` + length + two's-complement big-endian bytes
                          (exact, whatever the size; ``True`` is 1)
``float``                 an integral float is the ``int`` it equals; NaN is
                          ``Fn``, the infinities ``F+`` and ``F-``; any other
                          float ``F`` + its IEEE-754 binary64 bytes
``str``                   ``S`` + length + UTF-8 (lone surrogates passed through)
``bytes`` (and bytearray,
memoryview)               ``B`` + length + the bytes
``list``, ``tuple``       ``L`` + count + each item's form
``dict``                  ``D`` + count + (key form, value form) pairs sorted by
                          the key form
========================  ==================================================

Lengths and counts are 8-byte big-endian integers, so no two different forms
concatenate to the same bytes.  The form is part of what a persistent backend keeps on
disk: it will not change within a major version of torpor (``KEY_FORMAT`` names it).

Every value a session can hold (docs/contract.md §1) has a key; :func:`canonical_key` never
raises for one.  For anything else (a ``set``, an object, data nested deeper than
``MAX_DEPTH`` containers or containing itself) it raises ``TypeError`` or
``ValueError``, and a backend should then not use its index for that criterion (the
manager's scan compares with ``==`` and gets it right).
"""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Any, Final

__all__ = ["ENTRY_BYTES", "KEY_BYTES", "KEY_FORMAT", "MAX_DEPTH", "canonical_key", "index_entry"]

KEY_BYTES: Final = 16
"""Length of every key :func:`canonical_key` returns."""
KEY_FORMAT: Final = "torpor.indexing/1"
"""Names the canonical form and digest; it changes only if keys would change."""
MAX_DEPTH: Final = 300
"""Containers nested deeper than this are refused (``ValueError``).  Stored data nests
at most ``torpor.codec.MAX_DEPTH`` (256) deep, so no storable value reaches it."""

ENTRY_BYTES: Final = 8 + KEY_BYTES
"""Length of every entry :func:`index_entry` returns."""

_LEN = struct.Struct(">Q")
_FLOAT = struct.Struct(">d")


def canonical_key(value: Any) -> bytes:
    """A ``KEY_BYTES``-byte key such that ``a == b`` implies equal keys.

    ``TypeError`` for a value of a type sessions cannot hold, ``ValueError`` for one
    nested deeper than ``MAX_DEPTH`` (or containing itself); never for a value that
    can be stored in a session.
    """
    digest = hashlib.blake2b(digest_size=KEY_BYTES)
    digest.update(_form(value, MAX_DEPTH))
    return digest.digest()


def _int_form(number: int) -> bytes:
    raw = number.to_bytes((number.bit_length() + 8) // 8, "big", signed=True)
    return b"I" + _LEN.pack(len(raw)) + raw


def _form(value: Any, depth: int) -> bytes:
    # Exact types first (the common case), then subclasses through their base type's
    # own conversion, so that an overridden __int__ or __str__ cannot change the key.
    kind = type(value)
    if value is None:
        return b"N"
    if kind is str or isinstance(value, str):
        raw = str.__str__(value).encode("utf-8", "surrogatepass")
        return b"S" + _LEN.pack(len(raw)) + raw
    if kind is bool or kind is int or isinstance(value, int):
        return _int_form(int.__index__(value))
    if kind is float or isinstance(value, float):
        number = float.__float__(value)
        if math.isnan(number):
            return b"Fn"
        if math.isinf(number):
            return b"F+" if number > 0 else b"F-"
        if number.is_integer():
            return _int_form(int(number))  # exact: 1e20 -> 100000000000000000000
        return b"F" + _FLOAT.pack(number)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return b"B" + _LEN.pack(len(raw)) + raw
    if isinstance(value, list | tuple | dict):
        if depth <= 0:
            raise ValueError(f"value nests deeper than {MAX_DEPTH} containers (or contains itself)")
        if isinstance(value, dict):
            pairs = sorted((_form(k, depth - 1), _form(v, depth - 1)) for k, v in value.items())
            return b"D" + _LEN.pack(len(pairs)) + b"".join(k + v for k, v in pairs)
        items = [_form(item, depth - 1) for item in value]
        return b"L" + _LEN.pack(len(items)) + b"".join(items)
    raise TypeError(f"{kind.__name__} is not a value a session can hold, so it has no index key")


def index_entry(field: str, value: Any) -> bytes:
    """Where ``data[field] == value`` is filed in an index: ``ENTRY_BYTES`` bytes, 8 of
    BLAKE2b of the field name, then :func:`canonical_key` of the value.  Shared by the
    backends that keep secondary indexes, so equal values find each other in all of
    them; raises like :func:`canonical_key` for a value no session can hold."""
    field_hash = hashlib.blake2b(field.encode("utf-8", "surrogatepass"), digest_size=8)
    return field_hash.digest() + canonical_key(value)
