"""``torpor.open``: configuration -> backend -> manager."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torpor._clock import Clock
from torpor._config import resolve
from torpor._manager import Manager
from torpor._registry import load_backend_factory, load_plugin
from torpor.errors import ConfigError, TorporError

__all__ = ["check_backend_options", "open"]


def open(
    backend: str | object | None = None,
    *,
    config: object = None,
    clock: Clock | None = None,
    **options: Any,
) -> Manager:
    """Open a session manager.

    ``backend`` is a registered backend name (default ``ets_like``, or what the
    environment/config file says) or an already-built backend object.  ``options``
    mixes manager options (``default_timeout_ms``, ``hibernate_after_ms``, ...) and the
    backend's own options (``path`` for lmdb, ...).  ``clock`` returns milliseconds.
    """
    if backend is None or isinstance(backend, str):
        resolved = resolve(backend, config, options)
        factory = load_backend_factory(resolved.backend)
        try:
            instance = factory(**resolved.backend_options)
        except TorporError:
            raise
        except TypeError as exc:
            raise ConfigError(f"backend {resolved.backend!r}: {exc}") from None
        name = resolved.backend
    else:
        resolved = resolve(None, config, options)
        if any(k not in resolved.manager for k in options):
            extra = sorted(k for k in options if k not in resolved.manager)
            raise ConfigError(
                f"options {extra} are backend options; pass them to the backend object you built"
            )
        instance = backend
        name = str(getattr(backend, "name", type(backend).__name__))
    plugins = tuple(
        load_plugin(p) if isinstance(p, str) else p for p in resolved.manager["plugins"]
    )
    return Manager(instance, name=name, options=resolved.manager, clock=clock, plugins=plugins)


def check_backend_options(
    backend: str, given: Mapping[str, Any], valid: Iterable[str], *, required: Iterable[str] = ()
) -> None:
    """For backend factories: refuse unknown and missing options with a clear error."""
    valid = set(valid)
    unknown = sorted(set(given) - valid)
    if unknown:
        raise ConfigError(
            f"backend {backend!r} has no option(s) {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(sorted(valid)) or 'none'}"
        )
    missing = sorted(set(required) - set(given))
    if missing:
        raise ConfigError(f"backend {backend!r} needs option(s) {', '.join(map(repr, missing))}")
