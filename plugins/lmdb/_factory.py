"""Entry point ``lmdb``: options -> ``LmdbBackend``."""

from __future__ import annotations

import re
from typing import Any, Final

from torpor import backend_factory, check_backend_options, parse_int, parse_path
from torpor.errors import ConfigError
from torpor.plugins.lmdb._backend import CAPABILITIES, LmdbBackend
from torpor.plugins.lmdb._env import DURABILITY, EnvConfig
from torpor.plugins.lmdb._layout import NAMES

__all__ = ["create_backend"]

_DEFAULTS: dict[str, Any] = {
    "map_size": 64 << 20,
    "durability": "sync",
    "max_readers": 126,
    "max_dbs": 128,
    "namespace": "torpor",
    "touch_resolution_ms": 1000,
}
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_MAX_MAP: Final = (1 << 63) - 1
_MAX_COUNT: Final = (1 << 31) - 1


@backend_factory(
    capabilities=CAPABILITIES,
    # ``path`` names the environment's folder: the kit gives each test its own.
    storage_options={"path": "sessions"},
)
def create_backend(**options: Any) -> LmdbBackend:
    check_backend_options("lmdb", options, {"path", *_DEFAULTS}, required={"path"})
    merged = {**_DEFAULTS, **options}
    path = parse_path(
        merged["path"], backend="lmdb", names="a folder", give="the folder of the store"
    )
    namespace = str(merged["namespace"])
    if not _NAMESPACE.match(namespace):
        raise ConfigError("lmdb namespace must be 1-64 characters of A-Z a-z 0-9 _ . -")
    durability = str(merged["durability"])
    if durability not in DURABILITY:
        raise ConfigError(f"durability must be one of {', '.join(DURABILITY)}, not {durability!r}")
    map_size, max_readers, max_dbs, resolution = (
        parse_int(k, merged[k]) or 0
        for k in ("map_size", "max_readers", "max_dbs", "touch_resolution_ms")
    )
    if not 0 < map_size <= _MAX_MAP:
        raise ConfigError(f"lmdb map_size must be between 1 and {_MAX_MAP} bytes, not {map_size}")
    if not 0 < max_readers <= _MAX_COUNT:
        raise ConfigError(f"lmdb max_readers must be between 1 and {_MAX_COUNT}")
    if not len(NAMES) <= max_dbs <= _MAX_COUNT:
        raise ConfigError(
            f"lmdb max_dbs must be at least {len(NAMES)} (the databases of one namespace)"
        )
    if resolution < 0:
        raise ConfigError("lmdb touch_resolution_ms must be >= 0")
    config = EnvConfig(durability, map_size, max_readers, max_dbs)
    return LmdbBackend(path, config, namespace=namespace, touch_resolution_ms=resolution)
