"""Every error torpor raises on purpose.

All of them derive from one base, so ``except torpor.errors.TorporError`` catches
anything torpor decided to refuse, and nothing that is a bug::

    TorporError
    ├── InvalidSessionId        (also a ValueError)  an id breaks the UTF-8 id rules
    ├── SessionExists                                  create() with an id in use
    ├── SessionNotFound         (also a KeyError)     the session is missing or expired
    ├── Conflict                                       save() of a stale copy
    │   └── TransactionConflict                        a transaction met contention
    ├── SerializationError      (also a TypeError)    data that is not msgpack-able,
    │                                                  or a stored record we cannot read
    ├── SessionTooLarge         (also a ValueError)   encoded session > max_session_bytes
    ├── BackendNotFound         (also a LookupError)  no backend of that name is installed
    ├── MissingDependency       (also ImportError)    the backend's extra is not installed
    ├── ConfigError             (also a ValueError)   bad option, value or config file
    ├── BackendUnavailable                             the engine failed (disk, network...)
    ├── UnsupportedOperation                           the backend cannot do this at all
    ├── ManagerClosed                                  a call after close()
    ├── SessionCancelled                               cancel() woke a blocked receive()
    ├── InvalidArgument         (also a ValueError)   a bad argument value or type
    └── ReentrantCall           (also a RuntimeError) the manager called from update(fn)

A backend's own exceptions (lmdb.Error, redis.RedisError, sqlite3.Error) never reach
the user raw: backends translate them into ``BackendUnavailable`` (or a more precise
error above), keeping the original as ``__cause__``.

Messages say what was wrong and what to do about it.  They never contain
credentials.
"""

from __future__ import annotations

__all__ = [
    "BackendNotFound",
    "BackendUnavailable",
    "ConfigError",
    "Conflict",
    "InvalidArgument",
    "InvalidSessionId",
    "ManagerClosed",
    "MissingDependency",
    "ReentrantCall",
    "SerializationError",
    "SessionCancelled",
    "SessionExists",
    "SessionNotFound",
    "SessionTooLarge",
    "TorporError",
    "TransactionConflict",
    "UnsupportedOperation",
]


class TorporError(Exception):
    """Base of every error torpor raises deliberately."""


class InvalidSessionId(TorporError, ValueError):
    """A session id breaks one of the id rules (docs/contract.md §2).

    ``rule`` is a short machine-readable name (``"empty"``, ``"too_long"``,
    ``"control_character"``, ``"surrogate"``, ``"invalid_utf8"``, ``"type"``) and
    ``position`` the offending index (code points for ``str``, bytes for ``bytes``),
    or ``None`` when the rule is about the whole id.
    """

    def __init__(self, message: str, *, rule: str, position: int | None = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.position = position


class SessionExists(TorporError):
    """``create`` was given an explicit id that is already in use."""


class SessionNotFound(TorporError, KeyError):
    """The session does not exist (or has expired)."""

    def __str__(self) -> str:  # KeyError would repr() the message; keep it readable
        return str(self.args[0]) if self.args else "session not found"


class Conflict(TorporError):
    """``save`` was given a copy whose version is no longer the stored one."""


class TransactionConflict(Conflict):
    """A multi-session transaction met contention and was rolled back; nothing of it
    was applied.  ``mgr.transaction(fn)`` runs ``fn`` again on its own, a bounded
    number of times, before raising it; a ``with`` block cannot be re-run."""


class SerializationError(TorporError, TypeError):
    """Data that torpor cannot encode, or a stored record it cannot decode."""


class SessionTooLarge(TorporError, ValueError):
    """The encoded session is larger than ``max_session_bytes``."""


class BackendNotFound(TorporError, LookupError):
    """No backend of the requested name is installed."""


class MissingDependency(TorporError, ImportError):
    """A backend needs an optional dependency that is not installed."""


class ConfigError(TorporError, ValueError):
    """An option, option value or configuration file is wrong."""


class BackendUnavailable(TorporError):
    """The storage engine failed: a full disk, a lost connection, a corrupt file."""


class UnsupportedOperation(TorporError):
    """The backend cannot perform this operation and torpor has no fallback for it."""


class ManagerClosed(TorporError):
    """The manager was closed; open a new one."""


class SessionCancelled(TorporError):
    """The session was cancelled while a consumer waited in ``receive``."""


class InvalidArgument(TorporError, ValueError):
    """An argument has a bad value or type (a negative, NaN or infinite ``timeout``,
    ``max_messages < 1``, a ``path`` that is not a non-empty path...).

    ``argument`` names the argument, so callers can tell which one without parsing
    the message.
    """

    def __init__(self, message: str, *, argument: str) -> None:
        super().__init__(message)
        self.argument = argument


class ReentrantCall(TorporError, RuntimeError):
    """A torpor manager was called from inside an ``update`` function.

    ``fn`` runs inside the backend's transaction (under a lock, or an engine's write
    transaction); a call back into torpor from there could deadlock or fail in the
    engine, so it is refused at once.  Compute what you need before ``update``, or
    make the second call after it returns.
    """
