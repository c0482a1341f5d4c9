"""redis-py's exceptions, translated: nothing raw reaches a user."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis

from torpor.errors import BackendUnavailable, ConfigError

__all__ = ["ACL_NEEDED", "translated"]

ACL_NEEDED = "+@read +@write +@sortedset +@string +@keyspace +@scripting +@connection +info"
"""The ACL categories and commands a torpor user needs (FUNCTION LOAD also needs
+function|load, without which scripts run through EVALSHA)."""


@contextmanager
def translated(where: str) -> Iterator[None]:
    """Turn a ``RedisError`` raised inside into a torpor error naming ``where`` (a
    redacted description of the server: never a password)."""
    try:
        yield
    except redis.exceptions.RedisError as exc:
        raise _translate(exc, where) from exc


def _translate(exc: redis.exceptions.RedisError, where: str) -> Exception:
    text = str(exc)
    if isinstance(exc, redis.exceptions.NoPermissionError) or text.startswith("NOPERM"):
        return ConfigError(
            f"redis at {where} refused a command for lack of permission ({text}); give the "
            f"torpor user the ACL categories {ACL_NEEDED}"
        )
    if isinstance(exc, redis.exceptions.AuthenticationError) or text.startswith("WRONGPASS"):
        return ConfigError(
            f"redis at {where} refused the credentials ({text}); check username and password"
        )
    if text.startswith("OOM"):
        return BackendUnavailable(
            f"redis at {where} is out of memory ({text}); raise maxmemory or delete data "
            "(torpor needs maxmemory-policy noeviction so that sessions are never dropped)"
        )
    return BackendUnavailable(f"redis at {where}: {type(exc).__name__}: {text}")
