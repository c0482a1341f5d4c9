"""Entry point ``redis``: options -> ``RedisBackend``.

Exactly one topology: ``url=`` (one server; a Cluster with ``cluster=True``),
``sentinels=`` with ``service_name=``, or ``client=`` (the user's own client, used as it
is and never closed by torpor).  Every refused value is a ``ConfigError`` naming its
option; no description of a server this module builds (``where``, in every error and
log line) holds a password.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.cluster import RedisCluster
from redis.connection import URL_QUERY_ARGUMENT_PARSERS, parse_url
from redis.exceptions import RedisClusterException
from redis.sentinel import SentinelConnectionPool

from torpor import backend_factory, check_backend_options, parse_int
from torpor.errors import ConfigError
from torpor.plugins.redis._backend import CAPABILITIES, RedisBackend
from torpor.plugins.redis._config import (
    PASS_THROUGH,
    ClientSettings,
    describe_sentinels,
    redact,
)
from torpor.plugins.redis._errors import translated

__all__ = ["create_backend"]

Client = redis.Redis | RedisCluster

_DEFAULTS: dict[str, Any] = {
    "namespace": "torpor",
    "touch_resolution_ms": 1000,
    "socket_timeout": ClientSettings.socket_timeout,
    "socket_connect_timeout": ClientSettings.socket_connect_timeout,
    "retries": ClientSettings.retries,
    "max_connections": ClientSettings.max_connections,
    "pool_timeout": ClientSettings.pool_timeout,
    "cluster": False,
    "buckets": None,
    "wait_replicas": 0,
    "wait_timeout_ms": 1000,
}
_TOPOLOGY = {"url", "client", "sentinels", "service_name", "sentinel_username",
             "sentinel_password", "ssl"}  # fmt: skip
# Options that shape the connections torpor builds: meaningless with client=.
_CONNECTION = {"socket_timeout", "socket_connect_timeout", "retries", "max_connections",
               "pool_timeout", "ssl", *PASS_THROUGH}  # fmt: skip
_URL_SCHEMES = ("redis://", "rediss://", "unix://")
# What parse_url gives for a URL's own parts, and the query parameters it knows.
_URL_KEYS = {"username", "password", "host", "port", "db", "path", "connection_class",
             *URL_QUERY_ARGUMENT_PARSERS}  # fmt: skip
# Any text that cannot end the hash tag early, nor look like another namespace's bucket
# tag ("<ns>#<i>.<n>", _keys.py); the kit passes folder paths.
_NAMESPACE = re.compile(r"^[^{}#\x00-\x1f]{1,256}$")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


@dataclass
class _Built:
    client: Client
    blocking: Client | None
    where: str
    owns: bool

    def close(self) -> None:
        if self.owns:
            for client in (self.client, self.blocking):
                if client is not None:
                    client.close()


@backend_factory(
    capabilities=CAPABILITIES,
    # The namespace is what separates stores on one server: the kit gives each test
    # its own (a fresh folder path, used as text).
    storage_options={"namespace": "sessions"},
)
def create_backend(**options: Any) -> RedisBackend:
    check_backend_options("redis", options, {*_TOPOLOGY, *_DEFAULTS, *PASS_THROUGH})
    merged = {**_DEFAULTS, **options}
    namespace = str(merged["namespace"])
    if not _NAMESPACE.match(namespace):
        raise ConfigError(
            "redis namespace must be 1-256 characters, without braces, '#' or control characters"
        )
    resolution = _whole(merged, "touch_resolution_ms", least=0)
    buckets = _buckets(merged["buckets"])
    wait_replicas = _whole(merged, "wait_replicas", least=0)
    wait_timeout_ms = _whole(merged, "wait_timeout_ms", least=1)
    built = _topology(options, merged)
    try:
        return RedisBackend(
            built.client,
            namespace=namespace,
            where=built.where,
            owns_client=built.owns,
            touch_resolution_ms=resolution,
            buckets=buckets,
            wait_replicas=wait_replicas,
            wait_timeout_ms=wait_timeout_ms,
            blocking=built.blocking,
        )
    except BaseException:
        built.close()
        raise


def _topology(given: dict[str, Any], options: dict[str, Any]) -> _Built:
    chosen = [name for name in ("url", "sentinels", "client") if given.get(name) is not None]
    if len(chosen) != 1:
        raise ConfigError(
            "redis needs exactly one of url= (redis://, rediss:// or unix://), sentinels= "
            f"(with service_name=) or client=; got {', '.join(chosen) or 'none'}"
        )
    cluster = _flag(options, "cluster")
    if cluster and chosen[0] != "url":
        raise ConfigError(
            "redis cluster=True goes with url= (any one node of the Cluster); with client=, "
            "pass a redis.cluster.RedisCluster"
        )
    sentinel_only = sorted(
        n for n in ("service_name", "sentinel_username", "sentinel_password", "ssl") if n in given
    )
    if chosen[0] != "sentinels" and sentinel_only:
        raise ConfigError(f"redis option(s) {', '.join(sentinel_only)} go with sentinels= only")
    if chosen[0] == "client":
        foreign = sorted(n for n in given if n in _CONNECTION)
        if foreign:
            raise ConfigError(
                f"redis option(s) {', '.join(foreign)} shape connections torpor builds; with "
                "client= configure your client instead"
            )
        client, where = _check_client(given["client"])
        return _Built(client, None, where, owns=False)
    settings = _settings(options)
    passed = {k: v for k, v in given.items() if k in PASS_THROUGH}
    if chosen[0] == "url":
        return _from_url(given["url"], cluster, settings, passed)
    return _from_sentinels(given, settings, passed)


def _from_url(
    url: object, cluster: bool, settings: ClientSettings, passed: dict[str, Any]
) -> _Built:
    if not isinstance(url, str) or not url.startswith(_URL_SCHEMES):
        raise ConfigError("redis url must be a redis://, rediss:// or unix:// URL")
    _check_url(url)
    where = redact(url)
    if not cluster:
        return _pair(lambda blocking: settings.build(url, passed, blocking=blocking), where)
    if url.startswith("unix://"):
        raise ConfigError("redis cluster=True needs a redis:// or rediss:// url (no unix://)")
    where = f"cluster {where}"
    with translated(where):  # the Cluster client reads the slot map at once
        try:
            return _pair(lambda blocking: settings.cluster(url, passed, blocking=blocking), where)
        except RedisClusterException as exc:
            if "Cluster mode is not enabled" in str(exc):
                _why_no_slot_map(url, passed, settings, where)
            raise


def _check_url(url: str) -> None:
    """Parse ``url`` as redis-py will, now: a malformed one is a ConfigError (never a
    raw ValueError at the first command) and the message never holds the URL, which
    may hold a password."""
    try:
        urlsplit(url).port  # noqa: B018  (a port that is no number or out of range raises)
        query = parse_url(url)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError) as exc:
        reason = str(exc).split(":")[0] if "://" not in str(exc) else "cannot be parsed"
        raise ConfigError(f"redis url is malformed ({reason})") from None
    unknown = sorted(set(query) - _URL_KEYS)
    if unknown:
        raise ConfigError(f"redis url has query parameters redis-py does not know: {unknown}")


def _why_no_slot_map(
    url: str, passed: dict[str, Any], settings: ClientSettings, where: str
) -> None:
    """redis-py says "Cluster mode is not enabled" whenever CLUSTER SLOTS fails, a
    missing permission included: ask the node again to tell which."""
    with settings.build(url, passed) as plain:
        try:
            plain.execute_command("CLUSTER SLOTS")
        except redis.exceptions.NoPermissionError:
            raise  # translated: a ConfigError naming the ACL categories
        except redis.exceptions.ResponseError as exc:
            raise ConfigError(
                f"redis at {where} is not a Cluster node ({exc}): drop cluster=True"
            ) from exc


def _from_sentinels(
    given: dict[str, Any], settings: ClientSettings, passed: dict[str, Any]
) -> _Built:
    addresses = _addresses(given["sentinels"])
    service = given.get("service_name")
    if not isinstance(service, str) or not service:
        raise ConfigError("redis sentinels= needs service_name= (the monitored primary's name)")
    auth = {
        key: given[option]
        for option, key in (("sentinel_username", "username"), ("sentinel_password", "password"))
        if given.get(option) is not None
    }
    if given.get("ssl") is not None:
        passed = {**passed, "ssl": _flag(given, "ssl")}
    manager = settings.sentinels(addresses, auth)
    where = describe_sentinels(service, addresses)
    return _pair(
        lambda blocking: settings.sentinel(manager, service, passed, blocking=blocking), where
    )


def _pair(build: Callable[[bool], Client], where: str) -> _Built:
    client = build(False)
    try:
        blocking = build(True)
    except BaseException:
        client.close()
        raise
    return _Built(client, blocking, where, owns=True)


def _check_client(client: object) -> tuple[Client, str]:
    if isinstance(client, RedisCluster):
        kwargs = client.get_connection_kwargs()  # type: ignore[no-untyped-call]
        if client.read_from_replicas or client.load_balancing_strategy is not None:
            raise ConfigError(
                "redis client= must not read from replicas (read_from_replicas, "
                "load_balancing_strategy): a replica may not have a write yet"
            )
        nodes = ",".join(node.name for node in client.get_primaries())  # type: ignore[no-untyped-call]
        where = f"cluster {nodes}"
    elif isinstance(client, redis.Redis):
        kwargs = client.get_connection_kwargs()
        pool = client.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            if not pool.is_master:
                raise ConfigError(
                    "redis client= must talk to the primary (Sentinel.master_for), not to a "
                    "replica (slave_for): a replica may not have a write yet"
                )
            where = f"sentinel service {pool.service_name!r}"
        elif kwargs.get("path"):
            where = f"unix://{kwargs['path']}"
        else:
            where = f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
    else:
        raise ConfigError(
            "redis client= must be a redis.Redis or a redis.cluster.RedisCluster, not "
            f"{type(client).__name__}"
        )
    if kwargs.get("decode_responses"):
        raise ConfigError("redis client= must not decode responses (decode_responses=False)")
    return client, where


def _settings(options: dict[str, Any]) -> ClientSettings:
    return ClientSettings(
        socket_timeout=_seconds(options, "socket_timeout"),
        socket_connect_timeout=_seconds(options, "socket_connect_timeout"),
        retries=_whole(options, "retries", least=0),
        max_connections=_whole(options, "max_connections", least=1),
        pool_timeout=_seconds(options, "pool_timeout"),
    )


def _addresses(value: object) -> list[tuple[str, int]]:
    """``[(host, port), ...]``, or ``"host:port,host:port"`` (from an env var or TOML)."""
    items: Sequence[object]
    if isinstance(value, str):
        items = [part.strip().rsplit(":", 1) for part in value.split(",") if part.strip()]
    elif isinstance(value, Sequence):
        items = value
    else:
        items = []
    addresses: list[tuple[str, int]] = []
    for item in items:
        if not (isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2):
            addresses = []
            break
        host, port = item
        number = _port(port)
        if not isinstance(host, str) or not host or number is None:
            addresses = []
            break
        addresses.append((host, number))
    if not addresses:
        raise ConfigError(
            "redis sentinels must be a non-empty list of (host, port) pairs, or "
            f"'host:port,host:port' text; not {value!r}"
        )
    return addresses


def _port(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    return number if 0 < number < 65536 else None


def _flag(options: dict[str, Any], name: str) -> bool:
    value = options.get(name, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f"redis {name} must be true or false, not {value!r}")


def _buckets(value: object) -> int | None:
    count = parse_int("buckets", value, nullable=True)
    if count is not None and not 1 <= count <= 16384:
        raise ConfigError(f"redis buckets must be between 1 and 16384, not {count}")
    return count


def _whole(options: dict[str, Any], name: str, *, least: int) -> int:
    value = parse_int(name, options[name])
    assert value is not None  # not nullable
    if value < least:
        raise ConfigError(f"redis {name} must be >= {least}, not {value}")
    return value


def _seconds(options: dict[str, Any], name: str) -> float:
    value = options[name]
    try:
        if isinstance(value, bool):
            raise TypeError(name)
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"redis {name} must be a number of seconds, not {value!r}") from None
    if not 0 < number < float("inf"):
        raise ConfigError(f"redis {name} must be a positive number of seconds, not {value!r}")
    return number
