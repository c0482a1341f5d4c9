"""sqlite3 errors, translated: nothing raw reaches a user (hookspecs, "Errors").

Every engine error becomes ``BackendUnavailable`` with the original as ``__cause__``
and a message that says what went wrong in words an operator acts on: a full disk, an
I/O error, a damaged file or one that is not SQLite at all, a lock held too long by
another writer.  A connection used after the backend closed is ``ManagerClosed``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from torpor.errors import BackendUnavailable, ManagerClosed, TorporError

__all__ = ["BUSY_CODES", "describe", "is_busy", "translate", "translated"]

# Primary result codes (the low byte of an extended code).
_BUSY: Final = 5
_LOCKED: Final = 6
BUSY_CODES: Final = frozenset({_BUSY, _LOCKED})
_WORDS: Final = {
    3: "permission denied",
    8: "the database is read-only (file permissions, or a read-only file system)",
    10: "an I/O error (the disk or file system failed)",
    11: "the database file is damaged (SQLITE_CORRUPT); restore it from a backup",
    13: "the disk is full (SQLITE_FULL); free some space",
    14: "the database file cannot be opened",
    26: "the file is not a SQLite database (or its header is damaged)",
    _BUSY: "the database is locked by another writer for too long (SQLITE_BUSY)",
    _LOCKED: "the database is locked by another connection (SQLITE_LOCKED)",
}


def _code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is contention (another writer holds the lock), worth a retry."""
    return isinstance(exc, sqlite3.OperationalError) and _code(exc) in BUSY_CODES


def describe(exc: sqlite3.Error) -> str:
    """What ``exc`` means, in words, with SQLite's own name and message."""
    code = _code(exc)
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    words = _WORDS.get(code) if code is not None else None
    return f"{words} [{name}: {exc}]" if words else f"{name}: {exc}"


def translate(exc: sqlite3.Error, where: str) -> TorporError:
    """The torpor error to raise (``from exc``) for an sqlite3 error met in ``where``."""
    if isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc):
        return ManagerClosed("this mnesia_like backend is closed; open a new manager")
    return BackendUnavailable(f"mnesia_like {where}: {describe(exc)}")


@contextmanager
def translated(where: str) -> Iterator[None]:
    """Run the body; an sqlite3 error leaves it as a torpor error naming ``where``.
    (The per-call paths catch ``sqlite3.Error`` and call :func:`translate` instead:
    a generator-based context manager costs a microsecond or two per call.)"""
    try:
        yield
    except sqlite3.Error as exc:
        raise translate(exc, where) from exc
