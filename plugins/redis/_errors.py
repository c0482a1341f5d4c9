"""redis-py's exceptions, translated: nothing raw reaches a user.

Most of redis-py's exceptions are ``RedisError``s, but not all: the Cluster client
raises ``RedisClusterException`` and its subclasses (``SlotNotCoveredError``,
``CrossSlotTransactionError``, ...) outside that hierarchy, so both roots are caught.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.exceptions import (
    ClusterCrossSlotError,
    CrossSlotTransactionError,
    RedisClusterException,
    SlotNotCoveredError,
)
from redis.sentinel import MasterNotFoundError

from torpor.errors import BackendUnavailable, ConfigError

__all__ = ["ACL_CLUSTER", "ACL_NEEDED", "ERRORS", "scrub", "translate", "translated"]

ACL_NEEDED = "+@read +@write +@scripting +@transaction +@connection +info"
"""The ACL categories and commands a torpor user needs on a server.  ``@scripting``
includes FUNCTION LOAD; a user denied it (``-function``) still works, its scripts
running through EVALSHA."""

ACL_CLUSTER = "+cluster|slots"
"""What a torpor user needs in addition on a Cluster: the client reads the slot map."""

_CROSSSLOT = (
    "a torpor bug: one of its commands spanned two hash slots (CROSSSLOT), which its "
    "key layout exists to prevent; please report it"
)
# A URL's "user:password@" or "?password=..." in any text redis-py might build from one.
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_QUERY_SECRET = re.compile(r"(\w*(?:pass|secret|token|credential)\w*=)[^&\s]+", re.IGNORECASE)


ERRORS = (redis.exceptions.RedisError, RedisClusterException)
"""Every exception redis-py raises (the roots of both hierarchies)."""


@contextmanager
def translated(where: str) -> Iterator[None]:
    """Turn a redis-py exception raised inside into a torpor error naming ``where`` (a
    redacted description of the server: never a password).  The redis-py exception
    stays as the ``__cause__``."""
    try:
        yield
    except ERRORS as exc:
        raise translate(exc, where) from exc


def scrub(text: str) -> str:
    """``text`` without the password of any URL in it."""
    return _QUERY_SECRET.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


def _untrusted_certificate(exc: BaseException) -> bool:
    """Whether a TLS verification failure lies in ``exc``'s chain (where redis-py
    keeps it, behind its own ConnectionError)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:  # a chain may loop
        chain.append(current)
        current = current.__cause__ or current.__context__
    return any(isinstance(e, ssl.SSLCertVerificationError) for e in chain)


def translate(exc: Exception, where: str) -> Exception:
    """The torpor error for redis-py's ``exc`` (for a hot path, where ``translated``,
    a generator-based context manager, costs a microsecond a call)."""
    text = scrub(str(exc))
    if isinstance(exc, redis.exceptions.NoPermissionError) or text.startswith("NOPERM"):
        return ConfigError(
            f"redis at {where} refused a command for lack of permission ({text}); give the "
            f"torpor user the ACL categories {ACL_NEEDED} (on a Cluster also {ACL_CLUSTER})"
        )
    if isinstance(exc, redis.exceptions.AuthenticationError) or text.startswith("WRONGPASS"):
        return ConfigError(
            f"redis at {where} refused the credentials ({text}); check username and password"
        )
    if _untrusted_certificate(exc) or "CERTIFICATE_VERIFY_FAILED" in text:
        return ConfigError(
            f"redis at {where}: the server's TLS certificate was refused ({text}); pass "
            "ssl_ca_certs= naming the CA that signed it"
        )
    if isinstance(exc, redis.exceptions.OutOfMemoryError) or text.startswith("OOM"):
        return BackendUnavailable(
            f"redis at {where} is out of memory ({text}); raise maxmemory or delete data "
            "(torpor needs maxmemory-policy noeviction so that sessions are never dropped)"
        )
    if isinstance(exc, ClusterCrossSlotError | CrossSlotTransactionError) or "CROSSSLOT" in text:
        return BackendUnavailable(f"redis at {where}: {_CROSSSLOT} ({text})")
    if isinstance(exc, redis.exceptions.AskError):  # MOVED too: a client blind to slots
        return ConfigError(
            f"redis at {where} is a Cluster node ({text}): open it with cluster=True (or pass "
            "a redis.cluster.RedisCluster as client=)"
        )
    if isinstance(exc, MasterNotFoundError):
        return BackendUnavailable(
            f"redis at {where}: no sentinel names a healthy primary ({text}); a failover "
            "may be under way: try again shortly"
        )
    if isinstance(exc, SlotNotCoveredError):
        return BackendUnavailable(
            f"redis at {where}: no Cluster node serves a slot ({text}); the cluster is down "
            "or being resharded: try again shortly"
        )
    if isinstance(exc, RedisClusterException) and "Cluster mode is not enabled" in text:
        return ConfigError(
            f"redis at {where} did not give its slot map ({text}): it is no Cluster node "
            f"(drop cluster=True), or the user lacks {ACL_CLUSTER}"
        )
    return BackendUnavailable(f"redis at {where}: {type(exc).__name__}: {text}")
