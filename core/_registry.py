"""Finding backends and extension plugins through entry points (DESIGN §8).

Backends register under ``torpor.backends`` as ``name = "module:factory"``;
``factory(**options)`` returns the backend object.  First-party backends register
exactly like third-party ones (see this project's pyproject.toml).

Loading is lazy and per plugin: opening ``lmdb`` imports nothing of ``redis``.  Only
listing every backend (``torpor backends``) loads them all, and a broken one then
gives a warning naming it instead of breaking the list.
"""

from __future__ import annotations

import importlib.metadata as md
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torpor.errors import BackendNotFound, ConfigError, MissingDependency, TorporError

__all__ = [
    "BACKEND_GROUP",
    "PLUGIN_GROUP",
    "BackendInfo",
    "describe_backends",
    "load_backend_factory",
    "load_plugin",
]

BACKEND_GROUP = "torpor.backends"
PLUGIN_GROUP = "torpor.plugins"

# Extras of this distribution, for the "pip install torpor[...]" hint.
_FIRST_PARTY_EXTRAS = {"lmdb": "lmdb", "redis": "redis", "mnesia_like": "sqlite"}


@dataclass(frozen=True)
class BackendInfo:
    name: str
    distribution: str
    version: str
    target: str
    factory: Callable[..., Any] | None
    error: str | None


def _entry_points(group: str) -> dict[str, list[md.EntryPoint]]:
    found: dict[str, list[md.EntryPoint]] = {}
    for ep in md.entry_points(group=group):
        same = found.setdefault(ep.name, [])
        # One distribution seen twice on sys.path (e.g. editable + site) is not a clash.
        if not any(e.value == ep.value and _dist_name(e) == _dist_name(ep) for e in same):
            same.append(ep)
    return found


def _dist_name(ep: md.EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "?"


def _dist_version(ep: md.EntryPoint) -> str:
    return ep.dist.version if ep.dist is not None else "?"


def _load(ep: md.EntryPoint, kind: str) -> Callable[..., Any]:
    try:
        loaded = ep.load()
    except TorporError:
        raise
    except ModuleNotFoundError as exc:
        missing = exc.name or "?"
        # A first-party backend whose engine is missing: its extra fixes it.  A missing
        # torpor module is a broken install, which no extra fixes.
        extra = (
            _FIRST_PARTY_EXTRAS.get(ep.name)
            if _dist_name(ep) == "torpor" and missing.partition(".")[0] != "torpor"
            else None
        )
        fix = (
            f"pip install 'torpor[{extra}]'"
            if extra
            else f"reinstall {_dist_name(ep)} with its dependencies"
        )
        raise MissingDependency(
            f"{kind} {ep.name!r} needs the module {missing!r}, which is not installed; fix: {fix}"
        ) from exc
    except Exception as exc:
        raise BackendNotFound(
            f"{kind} {ep.name!r} from {_dist_name(ep)} failed to load: {type(exc).__name__}: {exc}"
        ) from exc
    if not callable(loaded):
        raise BackendNotFound(f"{kind} {ep.name!r} ({ep.value}) is not callable")
    return loaded  # type: ignore[no-any-return]


def _pick(found: Mapping[str, list[md.EntryPoint]], name: str, kind: str) -> md.EntryPoint:
    candidates = found.get(name)
    if not candidates:
        installed = ", ".join(sorted(found)) or "none"
        raise BackendNotFound(f"no {kind} named {name!r} is installed; installed: {installed}")
    if len(candidates) > 1:
        owners = ", ".join(f"{_dist_name(ep)} ({ep.value})" for ep in candidates)
        raise ConfigError(
            f"{kind} name {name!r} is registered by more than one distribution: {owners}; "
            "uninstall one of them"
        )
    return candidates[0]


def load_backend_factory(name: str) -> Callable[..., Any]:
    """The factory of the backend ``name`` (only that entry point is imported)."""
    return _load(_pick(_entry_points(BACKEND_GROUP), name, "backend"), "backend")


def load_plugin(name: str) -> Any:
    """An extension plugin from ``torpor.plugins``.

    The entry point must name a callable, else ``BackendNotFound``.  A class is
    instantiated with no arguments; any other callable (a function, an instance with
    ``__call__``) is the plugin object as it is and is never called.
    """
    ep = _pick(_entry_points(PLUGIN_GROUP), name, "plugin")
    obj = _load(ep, "plugin")
    return obj() if isinstance(obj, type) else obj


def describe_backends() -> list[BackendInfo]:
    """Every installed backend, loading each; broken ones carry ``error`` and give one
    ``RuntimeWarning`` each (one per name for a name that several distributions
    register)."""
    infos: list[BackendInfo] = []
    for name, eps in sorted(_entry_points(BACKEND_GROUP).items()):
        error: str | None = None
        factory: Callable[..., Any] | None = None
        if len(eps) > 1:
            owners = ", ".join(sorted(_dist_name(e) for e in eps))
            error = f"backend {name!r} is registered by {len(eps)} distributions ({owners})"
        else:
            try:
                factory = _load(eps[0], "backend")
            except TorporError as exc:
                error = str(exc)  # it names the backend already
        if error is not None:  # once per name, however many distributions claim it
            warnings.warn(f"torpor: {error}", RuntimeWarning, stacklevel=2)
        infos += [
            BackendInfo(name, _dist_name(ep), _dist_version(ep), ep.value, factory, error)
            for ep in eps
        ]
    return infos
