"""Options -> redis-py clients with explicit timeouts, retries and bounded pools, for
each topology (one server, Sentinel, Cluster); the checks made at open (server version,
eviction policy) and the redaction of every description of a server.

redis-py 8 changed its defaults (5 s socket timeout, 10 automatic retries, a pool that
fails past 100 connections, RESP3), so every client torpor builds sets all of them.
Each topology gets two clients over pools of their own: the main one, which retries
connection errors, and the *blocking* one for blocking mailbox pops, which never
retries (a pop resent after its reply was lost could take a second message and drop
the first) and whose socket timeout outlasts a pop slice.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from torpor.errors import ConfigError

__all__ = [
    "BLOCKING_SOCKET_TIMEOUT",
    "MIN_VERSION",
    "PASS_THROUGH",
    "ClientSettings",
    "SentinelBlockingPool",
    "check_server",
    "describe_sentinels",
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

BLOCKING_SOCKET_TIMEOUT = 5.0
"""The least socket timeout of a blocking client: a pop slice lasts up to 1 s, and its
reply must not be cut off by the socket (which would lose a popped message)."""

_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")
_SECRET_PARAM = re.compile(r"pass|secret|token|credential", re.IGNORECASE)


class SentinelBlockingPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """A Sentinel-managed pool that, past ``max_connections``, waits up to ``timeout``
    for a free connection instead of failing at once (redis-py has only the failing
    kind).  Connections to a primary that is no longer the primary are dropped on
    release, as in redis-py's own Sentinel pool.

    Closing it (``disconnect()`` of every connection, what ``Redis.close()`` does) also
    closes the connections to the sentinels, which would otherwise stay open until
    garbage collection; a later use simply reconnects them."""

    def disconnect(self, inuse_connections: bool = True) -> None:
        super().disconnect(inuse_connections)
        if inuse_connections:
            for client in self.sentinel_manager.sentinels:
                client.close()


@dataclass(frozen=True)
class ClientSettings:
    """What torpor sets instead of redis-py's defaults (which changed in 8.0)."""

    socket_timeout: float = 5.0
    socket_connect_timeout: float = 2.0
    retries: int = 3
    max_connections: int = 32
    pool_timeout: float = 5.0

    def retry(self, *, blocking: bool = False) -> Retry:
        """Connection errors and timeouts only, with a short exponential backoff, so an
        outage surfaces as ``BackendUnavailable`` within seconds; none when blocking."""
        if blocking:
            return Retry(NoBackoff(), 0)
        return Retry(ExponentialBackoff(cap=0.5, base=0.02), self.retries)

    def connection(self, *, blocking: bool = False) -> dict[str, Any]:
        """Connection options common to every topology."""
        timeout = self.socket_timeout
        return {
            "socket_timeout": max(timeout, BLOCKING_SOCKET_TIMEOUT) if blocking else timeout,
            "socket_connect_timeout": self.socket_connect_timeout,
            # torpor parses RESP2 replies; pinned, as redis-py 8 defaults to RESP3.
            "protocol": 2,
            "decode_responses": False,
        }

    def build(self, url: str, passed: Mapping[str, Any], *, blocking: bool = False) -> redis.Redis:
        """One server (``redis://``, ``rediss://``, ``unix://``), over a blocking pool."""
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=self.max_connections,
            timeout=self.pool_timeout,
            retry=self.retry(blocking=blocking),
            **self.connection(blocking=blocking),
            **passed,
        )
        return redis.Redis(connection_pool=pool)

    def cluster(
        self, url: str, passed: Mapping[str, Any], *, blocking: bool = False
    ) -> RedisCluster:
        """A Cluster found from the one node ``url`` names.  Every node gets a blocking
        pool of its own; reads go to primaries only (redis-py's defaults, said here so
        that a change of theirs cannot turn replica reads on); every slot must be
        covered, or the client refuses to start.  Connects at once (it reads the
        slot map), so it raises what an unreachable cluster raises."""
        return RedisCluster(
            url=url,
            retry=self.retry(blocking=blocking),
            require_full_coverage=True,
            load_balancing_strategy=None,
            connection_pool_class=redis.BlockingConnectionPool,
            max_connections=self.max_connections,
            timeout=self.pool_timeout,
            **self.connection(blocking=blocking),
            **passed,
        )

    def sentinel(
        self,
        manager: Sentinel,
        service_name: str,
        passed: Mapping[str, Any],
        *,
        blocking: bool = False,
    ) -> redis.Redis:
        """The service's primary, as the sentinels name it at each (re)connection;
        never a replica.  ``manager`` comes from :meth:`sentinels`."""
        client: redis.Redis = manager.master_for(  # type: ignore[no-untyped-call]
            service_name,
            connection_pool_class=SentinelBlockingPool,
            max_connections=self.max_connections,
            timeout=self.pool_timeout,
            retry=self.retry(blocking=blocking),
            **self.connection(blocking=blocking),
            **passed,
        )
        return client

    def sentinels(self, addresses: Sequence[tuple[str, int]], auth: Mapping[str, Any]) -> Sentinel:
        """Clients for the sentinels themselves; ``auth`` is their own ``username`` and
        ``password`` (``sentinel_username``/``sentinel_password``), if any.  No retries:
        redis-py asks the next sentinel when one fails."""
        options = {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_connect_timeout,
            "retry": Retry(NoBackoff(), 0),
            "protocol": 2,
            **auth,
        }
        return Sentinel(list(addresses), sentinel_kwargs=options)  # type: ignore[no-untyped-call]


def redact(url: str) -> str:
    """``url`` without its password, nor the value of any query parameter that may hold
    a secret (``?password=``): the user name stays, it helps with ACL errors."""
    parts = urlsplit(url)
    netloc, query = parts.netloc, parts.query
    if parts.password is not None:
        host = parts.hostname or ""
        if ":" in host:  # an IPv6 address lost its brackets
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
        netloc = f"{parts.username or ''}:***@{host}{port}"
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        hidden = [(k, "***" if _SECRET_PARAM.search(k) else v) for k, v in pairs]
        query = urlencode(hidden, safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    # Put together by hand: urlunsplit drops the "//" of an empty netloc (unix:///path).
    tail = (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
    return f"{parts.scheme}://{netloc}{parts.path}{tail}"


def describe_sentinels(service_name: str, addresses: Sequence[tuple[str, int]]) -> str:
    """``sentinel service 'name' via h1:p1,h2:p2``: what errors call such a server."""
    via = ",".join(f"{host}:{port}" for host, port in addresses)
    return f"sentinel service {service_name!r} via {via}"


def parse_version(text: str) -> tuple[int, int, int]:
    """``"7.2.4"`` -> ``(7, 2, 4)``; ConfigError for text that is no version."""
    found = _VERSION.match(text.strip())
    if found is None:
        raise ConfigError(f"cannot read the redis server version from {text!r}")
    major, minor, patch = found.groups()
    return int(major), int(minor), int(patch or 0)


def check_server(info: Mapping[str, Any], where: str, *, cluster: bool | None = None) -> None:
    """Refuse servers older than :data:`MIN_VERSION`; warn if the server may evict
    keys.  ``info`` is ``INFO server`` merged with ``INFO memory``.

    With ``cluster`` given, also refuse a server whose mode does not match the client:
    a Cluster node opened without ``cluster=True`` would answer most keys with MOVED,
    and a standalone server cannot serve a Cluster client."""
    raw = info.get("redis_version")
    if raw is None:
        raise ConfigError(f"redis at {where} reports no redis_version in INFO")
    version = parse_version(_text(raw))
    if version < MIN_VERSION:
        shown = ".".join(map(str, version))
        raise ConfigError(
            f"redis at {where} is version {shown}; torpor needs Redis 7.0 or later (or "
            "Valkey 7.2 or later): upgrade the server"
        )
    mode = info.get("redis_mode")
    if cluster is not None and mode is not None:
        if _text(mode) == "cluster" and not cluster:
            raise ConfigError(
                f"redis at {where} is a Cluster node: open it with cluster=True (or pass a "
                "redis.cluster.RedisCluster as client=)"
            )
        if _text(mode) != "cluster" and cluster:
            raise ConfigError(
                f"redis at {where} is not a Cluster node ({_text(mode)} mode): drop cluster=True"
            )
    policy = info.get("maxmemory_policy")
    if policy is not None and _text(policy) != "noeviction":
        message = (
            f"redis at {where} has maxmemory-policy {_text(policy)}: it may evict session "
            "keys when full, silently losing sessions; set maxmemory-policy noeviction"
        )
        log.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
