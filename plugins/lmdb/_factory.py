"""Entry point ``lmdb``: options -> ``LmdbBackend``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from torpor import check_backend_options
from torpor._config import parse_int
from torpor.errors import ConfigError
from torpor.plugins.lmdb._backend import LmdbBackend

_DEFAULTS: dict[str, Any] = {
    "map_size": 64 << 20,
    "durability": "sync",
    "max_readers": 126,
    "namespace": "torpor",
    "touch_resolution_ms": 1000,
}
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def create_backend(**options: Any) -> LmdbBackend:
    check_backend_options("lmdb", options, {"path", *_DEFAULTS}, required={"path"})
    merged = {**_DEFAULTS, **options}
    namespace = str(merged["namespace"])
    if not _NAMESPACE.match(namespace):
        raise ConfigError("lmdb namespace must be 1-64 characters of A-Z a-z 0-9 _ . -")
    map_size, max_readers, resolution = (
        parse_int(k, merged[k]) or 0 for k in ("map_size", "max_readers", "touch_resolution_ms")
    )
    if map_size <= 0 or max_readers <= 0 or resolution < 0:
        raise ConfigError("lmdb map_size and max_readers must be > 0, touch_resolution_ms >= 0")
    return LmdbBackend(
        Path(str(merged["path"])),
        map_size=map_size,
        durability=str(merged["durability"]),
        max_readers=max_readers,
        namespace=namespace,
        touch_resolution_ms=resolution,
    )
