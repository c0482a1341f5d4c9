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
    numbers = {
        k: parse_int(k, merged[k]) for k in ("map_size", "max_readers", "touch_resolution_ms")
    }
    if any(v is None or v < 0 for v in numbers.values()) or not numbers["map_size"]:
        raise ConfigError("lmdb map_size must be > 0; max_readers and touch_resolution_ms >= 0")
    return LmdbBackend(
        Path(str(merged["path"])),
        map_size=numbers["map_size"],  # type: ignore[arg-type]
        durability=str(merged["durability"]),
        max_readers=numbers["max_readers"],  # type: ignore[arg-type]
        namespace=namespace,
        touch_resolution_ms=numbers["touch_resolution_ms"],  # type: ignore[arg-type]
    )
