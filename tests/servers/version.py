"""The version a running server reports (``INFO server``)."""

from __future__ import annotations

from dataclasses import dataclass

import redis


@dataclass(frozen=True)
class ServerVersion:
    name: str  # "redis" or "valkey"
    version: str  # the server's own version, e.g. "8.1.8"
    redis_version: str  # the Redis level it claims (Valkey 8 says "7.2.4")

    def __str__(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def redis_level(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.redis_version.split("."))


def server_version(conn: redis.Redis) -> ServerVersion:
    info = conn.info("server")
    # Redis 7 has no server_name field; Valkey names itself and its own version field.
    name = str(info.get("server_name", "redis"))
    redis_version = str(info["redis_version"])
    return ServerVersion(name, str(info.get(f"{name}_version", redis_version)), redis_version)
