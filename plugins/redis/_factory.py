"""Entry point ``redis``: options -> ``RedisBackend``."""

from __future__ import annotations

import re
from typing import Any

import redis

from torpor import backend_factory, check_backend_options, parse_int
from torpor.errors import ConfigError
from torpor.plugins.redis._backend import CAPABILITIES, RedisBackend
from torpor.plugins.redis._config import PASS_THROUGH, ClientSettings, redact

__all__ = ["create_backend"]

_DEFAULTS: dict[str, Any] = {
    "namespace": "torpor",
    "touch_resolution_ms": 1000,
    "socket_timeout": ClientSettings.socket_timeout,
    "socket_connect_timeout": ClientSettings.socket_connect_timeout,
    "retries": ClientSettings.retries,
    "max_connections": ClientSettings.max_connections,
    "pool_timeout": ClientSettings.pool_timeout,
}
# Any text that cannot end the hash tag early; the kit passes folder paths.
_NAMESPACE = re.compile(r"^[^{}\x00-\x1f]{1,256}$")


@backend_factory(
    capabilities=CAPABILITIES,
    # The namespace is what separates stores on one server: the kit gives each test
    # its own (a fresh folder path, used as text).
    storage_options={"namespace": "sessions"},
)
def create_backend(**options: Any) -> RedisBackend:
    check_backend_options("redis", options, {"url", "client", *_DEFAULTS, *PASS_THROUGH})
    merged = {**_DEFAULTS, **options}
    namespace = str(merged["namespace"])
    if not _NAMESPACE.match(namespace):
        raise ConfigError(
            "redis namespace must be 1-256 characters, without braces or control characters"
        )
    resolution = parse_int("touch_resolution_ms", merged["touch_resolution_ms"]) or 0
    if resolution < 0:
        raise ConfigError("redis touch_resolution_ms must be >= 0")
    client, where, owns = _client(merged)
    try:
        return RedisBackend(
            client, namespace=namespace, where=where, owns_client=owns,
            touch_resolution_ms=resolution,
        )  # fmt: skip
    except BaseException:
        if owns:
            client.close()
        raise


def _client(options: dict[str, Any]) -> tuple[redis.Redis, str, bool]:
    url, client = options.get("url"), options.get("client")
    if (url is None) == (client is None):
        raise ConfigError("redis needs exactly one of url= (redis:// or rediss://) or client=")
    if client is not None:
        # RedisCluster is no redis.Redis: it is refused here until Cluster support lands.
        if not isinstance(client, redis.Redis):
            raise ConfigError(f"redis client= must be a redis.Redis, not {type(client).__name__}")
        if client.get_connection_kwargs().get("decode_responses"):
            raise ConfigError("redis client= must not decode responses (decode_responses=False)")
        kwargs = client.get_connection_kwargs()
        return client, f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}", False
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("redis url must be a redis://, rediss:// or unix:// URL")
    settings = ClientSettings(
        socket_timeout=_positive(options, "socket_timeout"),
        socket_connect_timeout=_positive(options, "socket_connect_timeout"),
        retries=parse_int("retries", options["retries"]) or 0,
        max_connections=max(parse_int("max_connections", options["max_connections"]) or 0, 1),
        pool_timeout=_positive(options, "pool_timeout"),
    )
    passed = {k: v for k, v in options.items() if k in PASS_THROUGH}
    return settings.build(url, passed), redact(url), True


def _positive(options: dict[str, Any], name: str) -> float:
    value = options[name]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"redis {name} must be a number of seconds, not {value!r}") from None
    if not 0 < number < float("inf"):
        raise ConfigError(f"redis {name} must be a positive number of seconds")
    return number
