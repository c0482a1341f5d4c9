"""Configuration resolution (docs/contract.md §3).

Precedence, highest first: keyword arguments to ``torpor.open``, environment
variables, a configuration file, defaults.

The file is ``config=`` when given (a path or an already-parsed mapping), else the
path in ``TORPOR_CONFIG``, else ``./torpor.toml``, else the ``[tool.torpor]`` table of
``./pyproject.toml``.  Its layout::

    backend = "lmdb"                 # manager options at the top level
    hibernate_after_ms = 30000
    plugins = ["my-metrics"]

    [lmdb]                           # options of one backend, in a table named after it
    path = "/var/lib/myapp/sessions"

Environment: ``TORPOR_BACKEND``, ``TORPOR_<MANAGER_OPTION>`` (e.g.
``TORPOR_HIBERNATE_AFTER_MS``; ``none`` means None) and ``TORPOR_<BACKEND>_<OPTION>``
for the selected backend (e.g. ``TORPOR_LMDB_PATH``).  Backend options are checked by
the backend's factory, which names the valid ones.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from torpor.errors import ConfigError, InvalidArgument

__all__ = ["DEFAULT_BACKEND", "MANAGER_DEFAULTS", "ResolvedConfig", "parse_int", "resolve"]

DEFAULT_BACKEND: Final = "ets_like"

MANAGER_DEFAULTS: Final[Mapping[str, Any]] = {
    "default_timeout_ms": 3_600_000,
    "hibernate_after_ms": 30_000,
    "cleanup_interval_ms": 60_000,
    "max_session_bytes": 1 << 20,
    "touch_resolution_ms": None,  # None: the backend's own default
    "sweep_batch_size": 1_000,
    "plugins": (),
    "fast_path": True,
    "sweeper": True,
}
# Options whose value may be None ("disabled" / "never" / "backend default").
_NULLABLE: Final = frozenset(
    {"default_timeout_ms", "hibernate_after_ms", "cleanup_interval_ms", "touch_resolution_ms"}
)
_POSITIVE: Final = frozenset({"max_session_bytes", "sweep_batch_size", "cleanup_interval_ms"})
_BOOLEAN: Final = frozenset({"fast_path", "sweeper"})


@dataclass(frozen=True)
class ResolvedConfig:
    backend: str
    manager: Mapping[str, Any]
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    source: str = "defaults"


def parse_int(name: str, value: object, *, nullable: bool = False) -> int | None:
    """Coerce an option value (int, or str from env/TOML) to int, or raise ConfigError."""
    if value is None or (isinstance(value, str) and value.strip().lower() in {"none", ""}):
        if nullable:
            return None
        raise ConfigError(f"option {name!r} needs a whole number, not None")
    if isinstance(value, bool):
        raise ConfigError(f"option {name!r} needs a whole number, not {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.replace("_", ""))
        except ValueError:
            pass
    raise ConfigError(f"option {name!r} needs a whole number, not {value!r}")


def parse_path(value: object, *, backend: str, names: str, give: str) -> Path:
    """A backend's ``path`` option: a non-empty str or os.PathLike with no NUL
    (nothing else, so that ``None`` or ``123`` never becomes a file called "None" or
    "123"), else ``InvalidArgument``.  ``names`` says what the path names ("a
    folder"), ``give`` what to pass instead of an empty one ("the folder of the
    store")."""
    if isinstance(value, str | os.PathLike):
        try:
            raw = os.fspath(value)
        except TypeError as exc:  # a PathLike whose __fspath__ returns something odd
            raise InvalidArgument(f"{backend} path: {exc}", argument="path") from None
        text = os.fsdecode(raw) if isinstance(raw, bytes) else raw
        if text and "\x00" not in text:
            return Path(text)
        problem = "is empty" if not text else "contains a NUL character"
        raise InvalidArgument(f"{backend} path {problem}; give {give}", argument="path")
    raise InvalidArgument(
        f"{backend} path must be a str or os.PathLike naming {names}, not "
        f"{type(value).__name__} {value!r}",
        argument="path",
    )


def _parse_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {
        "1",
        "true",
        "yes",
        "on",
        "0",
        "false",
        "no",
        "off",
    }:
        return value.lower() in {"1", "true", "yes", "on"}
    raise ConfigError(f"option {name!r} needs true or false, not {value!r}")


def _check_manager_option(name: str, value: Any) -> Any:
    if name == "plugins":
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        if isinstance(value, list | tuple):
            return tuple(value)
        raise ConfigError(f"option 'plugins' needs a list of plugin names, not {value!r}")
    if name in _BOOLEAN:
        return _parse_bool(name, value)
    number = parse_int(name, value, nullable=name in _NULLABLE)
    if number is not None and (number <= 0 if name in _POSITIVE else number < 0):
        raise ConfigError(f"option {name!r} must be {'> 0' if name in _POSITIVE else '>= 0'}")
    return number


def _load_file(config: object, cwd: Path, environ: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    if isinstance(config, Mapping):
        return dict(config), "config argument"
    if config is not None:
        path = Path(os.fspath(config))  # type: ignore[call-overload]
        return _read_toml(path), str(path)
    if environ.get("TORPOR_CONFIG"):
        path = Path(environ["TORPOR_CONFIG"])
        return _read_toml(path), str(path)
    if (cwd / "torpor.toml").is_file():
        return _read_toml(cwd / "torpor.toml"), "torpor.toml"
    if (cwd / "pyproject.toml").is_file():
        table = _read_toml(cwd / "pyproject.toml").get("tool", {}).get("torpor")
        if table is not None:
            return dict(table), "pyproject.toml [tool.torpor]"
    return {}, "defaults"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def resolve(
    backend: str | None,
    config: object,
    options: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ResolvedConfig:
    """Merge the four sources into manager options and backend options."""
    environ = os.environ if environ is None else environ
    file_cfg, source = _load_file(config, cwd or Path.cwd(), environ)

    name = backend or environ.get("TORPOR_BACKEND") or file_cfg.get("backend") or DEFAULT_BACKEND
    if not isinstance(name, str):
        raise ConfigError(f"backend must be a name, not {name!r}")

    manager: dict[str, Any] = dict(MANAGER_DEFAULTS)
    backend_options: dict[str, Any] = {}
    for key, value in file_cfg.items():
        if key == "backend":
            continue
        if key in MANAGER_DEFAULTS:
            manager[key] = _check_manager_option(key, value)
        elif isinstance(value, dict):
            if key == name:
                backend_options.update(value)
        else:
            valid = ", ".join(["backend", *sorted(MANAGER_DEFAULTS)])
            raise ConfigError(
                f"{source}: unknown option {key!r}; valid manager options: {valid} "
                f"(backend options go in a [{name}] table)"
            )
    for key in MANAGER_DEFAULTS:
        env_value = environ.get(f"TORPOR_{key.upper()}")
        if env_value is not None:
            manager[key] = _check_manager_option(key, env_value)
    prefix = f"TORPOR_{name.upper()}_"
    for env_key, env_value in environ.items():
        if env_key.startswith(prefix):
            backend_options[env_key[len(prefix) :].lower()] = env_value
    for key, value in options.items():
        if key in MANAGER_DEFAULTS:
            manager[key] = _check_manager_option(key, value)
        else:
            backend_options[key] = value
    return ResolvedConfig(name, manager, backend_options, source)
