"""Options -> a redis-py client with explicit timeouts, retries and a bounded pool;
the checks made at open (server version, eviction policy)."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from torpor.errors import ConfigError

__all__ = [
    "MIN_VERSION",
    "ClientSettings",
    "check_server",
    "parse_version",
    "redact",
]

log = logging.getLogger("torpor")

MIN_VERSION = (7, 0, 0)
"""ZRANGE BYLEX/BYSCORE LIMIT, FUNCTION and LMPOP need Redis 7.0 (or Valkey 7.2+)."""

PASS_THROUGH = frozenset(
    {"username", "password", "credential_provider", "ssl_certfile", "ssl_keyfile",
     "ssl_ca_certs", "ssl_ca_path", "ssl_cert_reqs", "ssl_check_hostname", "ssl_password",
     "ssl_min_version", "ssl_ciphers", "client_name"}
)  # fmt: skip
"""Connection options handed to redis-py as they are."""

_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class ClientSettings:
    """What torpor sets instead of redis-py's defaults (which changed in 8.0)."""

    socket_timeout: float = 5.0
    socket_connect_timeout: float = 2.0
    retries: int = 3
    max_connections: int = 32
    pool_timeout: float = 5.0

    def build(self, url: str, passed: Mapping[str, Any]) -> redis.Redis:
        """A client over a blocking pool: past ``max_connections`` a caller waits up to
        ``pool_timeout`` for a connection instead of failing at once.  Retries cover
        connection errors and timeouts only, with a short exponential backoff, so an
        outage surfaces as ``BackendUnavailable`` within seconds."""
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=self.max_connections,
            timeout=self.pool_timeout,
            socket_timeout=self.socket_timeout,
            socket_connect_timeout=self.socket_connect_timeout,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), self.retries),
            protocol=2,
            decode_responses=False,
            **passed,
        )
        return redis.Redis(connection_pool=pool)


def redact(url: str) -> str:
    """``url`` without its password (the user name stays: it helps with ACL errors)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port is not None else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def parse_version(text: str) -> tuple[int, int, int]:
    """``"7.2.4"`` -> ``(7, 2, 4)``; ConfigError for text that is no version."""
    found = _VERSION.match(text.strip())
    if found is None:
        raise ConfigError(f"cannot read the redis server version from {text!r}")
    major, minor, patch = found.groups()
    return int(major), int(minor), int(patch or 0)


def check_server(info: Mapping[str, Any], where: str) -> None:
    """Refuse servers older than :data:`MIN_VERSION`; warn if the server may evict
    keys.  ``info`` is ``INFO server`` merged with ``INFO memory``."""
    raw = info.get("redis_version")
    if raw is None:
        raise ConfigError(f"redis at {where} reports no redis_version in INFO")
    version = parse_version(str(raw.decode() if isinstance(raw, bytes) else raw))
    if version < MIN_VERSION:
        shown = ".".join(map(str, version))
        raise ConfigError(
            f"redis at {where} is version {shown}; torpor needs Redis 7.0 or later (or "
            "Valkey 7.2 or later): upgrade the server"
        )
    policy = info.get("maxmemory_policy")
    if isinstance(policy, bytes):
        policy = policy.decode()
    if policy is not None and policy != "noeviction":
        message = (
            f"redis at {where} has maxmemory-policy {policy}: it may evict session keys "
            "when full, silently losing sessions; set maxmemory-policy noeviction"
        )
        log.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)
