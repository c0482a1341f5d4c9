"""The rules, as pure functions: what a call does to the record it finds.

Each ``decide_*`` function takes the current record (``None`` when there is none) and
the time, and returns ``(change, outcome)``: the ``change`` a transaction function
hands back to the backend (a new ``Record``, a ``Removal``, or ``None``), and the
``Outcome`` the manager acts on after the commit (events, mailbox, return value).
The manager and the sweeps run every one of them through the same runner, which
keeps only the *last* call's outcome, because a backend may retry a transaction.

Nothing here touches a backend, a lock or a clock, so every rule can be tested on
plain values (``tests/test_decisions.py``), the way dogpile.cache keeps its policy
apart from its backend API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from torpor import codec
from torpor._record import Record
from torpor.errors import Conflict, SessionExists, SessionNotFound
from torpor.hookspecs import EXPIRE, Removal

__all__ = [
    "MISSING",
    "Change",
    "Outcome",
    "decide_create",
    "decide_expire",
    "decide_hibernate",
    "decide_read",
    "decide_remove",
    "decide_rewrite",
    "decide_save",
    "needs_write",
]

Change = Record | Removal | None


class Outcome(NamedTuple):
    """What a decision means once committed."""

    record: Record | None  # the live record afterwards (None: there is none)
    gone: Record | None = None  # a record this change removed or replaced
    removal: Removal | None = None  # how ``gone`` went
    woke: bool = False  # a hibernated session was woken


MISSING = Outcome(None)


def decide_create(current: Record | None, new: Record, now: int) -> tuple[Change, Outcome]:
    """Insert ``new``; a live session under the id is ``SessionExists``, an expired one
    is replaced (its incarnation ends as expired)."""
    if current is None:
        return new, Outcome(new)
    if not current.is_expired(now):
        raise SessionExists(f"session {new.id!r} already exists")
    return new, Outcome(new, current, EXPIRE)


def _expired(current: Record) -> tuple[Change, Outcome]:
    return EXPIRE, Outcome(None, current, EXPIRE)


def needs_write(record: Record, now: int, resolution: int) -> bool:
    """Whether a read must write: to wake the session, because it has expired (it is
    then removed), or because ``last_accessed`` is at least the touch resolution old.
    The resolution is never more than half the session's timeout, so a session read
    regularly never expires between two reads that did not write."""
    idle = now - record.last_accessed
    timeout = record.timeout_ms
    if timeout is not None:
        if idle > timeout:
            return True
        resolution = min(resolution, timeout // 2)
    return record.hibernated or idle >= resolution


def decide_read(current: Record | None, now: int, limit: int) -> tuple[Change, Outcome]:
    """``get``: wake and touch a live session; remove an expired one."""
    if current is None:
        return None, MISSING
    if current.is_expired(now):
        return _expired(current)
    new = current.woken(limit).touched(max(now, current.last_accessed))
    return new, Outcome(new, woke=current.hibernated)


def decide_rewrite(
    current: Record | None, now: int, change: Callable[[Record], Record | None]
) -> tuple[Change, Outcome]:
    """Apply ``change`` to a live session (``None`` from it: leave the record as is);
    an expired one is removed instead."""
    if current is None:
        return None, MISSING
    if current.is_expired(now):
        return _expired(current)
    new = change(current)
    return new, Outcome(current if new is None else new)


def decide_save(copy_incarnation: int, copy_version: int) -> Callable[[Record], Record]:
    """The check ``save`` makes before rewriting: a copy of another incarnation is
    ``SessionNotFound`` (never written over a re-created session), a stale version
    ``Conflict``.  Returns the check; the rewrite itself is the caller's."""

    def check(record: Record) -> Record:
        if record.incarnation != copy_incarnation:
            raise SessionNotFound(
                f"session {record.id!r} was deleted and created again since your copy was "
                "read; not saved (get() the new session instead)"
            )
        if record.version != copy_version:
            raise Conflict(
                f"session {record.id!r} is at version {record.version}, your copy is at "
                f"{copy_version}; get() it again and reapply your change"
            )
        return record

    return check


def decide_remove(current: Record | None, now: int, removal: Removal) -> tuple[Change, Outcome]:
    """``delete``/``cancel``: remove whatever is there.  ``outcome.removal`` is
    ``removal`` for a live session and ``EXPIRE`` for an expired one."""
    if current is None:
        return None, MISSING
    how = EXPIRE if current.is_expired(now) else removal
    return how, Outcome(None, current, how)


def decide_hibernate(
    current: Record | None, cutoff: int, compress: Callable[[bytes], bytes] = codec.compress
) -> Record | None:
    """The compact form of an active session last accessed before ``cutoff``."""
    if current is None or current.hibernated or current.last_accessed >= cutoff:
        return None
    return current.compacted(compress=compress)


def decide_expire(current: Record | None, now: int) -> Removal | None:
    """``EXPIRE`` for an expired session."""
    if current is None or not current.is_expired(now):
        return None
    return EXPIRE
