"""Entry point ``mnesia_like``: options -> ``SqliteBackend``."""

from __future__ import annotations

from typing import Any, Final

from torpor import backend_factory, check_backend_options, parse_int, parse_path
from torpor.errors import ConfigError
from torpor.plugins.mnesia_like._backend import CAPABILITIES, RAM_CAPABILITIES, SqliteBackend
from torpor.plugins.mnesia_like._connections import MODES

__all__ = ["create_backend"]

_DEFAULTS: Final[dict[str, Any]] = {
    "storage": "disc",
    "busy_timeout_ms": 5000,
    "touch_resolution_ms": 1000,
}
_MAX_BUSY_MS: Final = 3_600_000


@backend_factory(
    capabilities=CAPABILITIES,
    # ``path`` names the database file: the kit gives each test its own.
    storage_options={"path": "sessions.sqlite3"},
    # A ram store lives in this process: not PERSISTENT, not MULTI_PROCESS.
    capabilities_by_option={"storage": {"ram": RAM_CAPABILITIES}},
)
def create_backend(**options: Any) -> SqliteBackend:
    check_backend_options("mnesia_like", options, {"path", *_DEFAULTS})
    merged = {**_DEFAULTS, **options}
    storage = str(merged["storage"])
    mode = MODES.get(storage)
    if mode is None:
        raise ConfigError(f"mnesia_like storage must be one of {', '.join(MODES)}, not {storage!r}")
    raw_path = merged.get("path")
    if raw_path is None and mode.persistent:
        raise ConfigError(f"mnesia_like storage={storage!r} needs a path (the database file)")
    path = (
        None
        if raw_path is None
        else parse_path(
            raw_path, backend="mnesia_like", names="the database file", give="the database file"
        )
    )
    busy, resolution = (
        parse_int(k, merged[k]) or 0 for k in ("busy_timeout_ms", "touch_resolution_ms")
    )
    if not 0 < busy <= _MAX_BUSY_MS:
        raise ConfigError(f"mnesia_like busy_timeout_ms must be between 1 and {_MAX_BUSY_MS}")
    if resolution < 0:
        raise ConfigError("mnesia_like touch_resolution_ms must be >= 0")
    return SqliteBackend(path, mode, busy_timeout_ms=busy, touch_resolution_ms=resolution)
