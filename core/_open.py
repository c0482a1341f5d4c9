"""``torpor.open``: configuration -> backend -> manager."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torpor._clock import Clock
from torpor._config import resolve
from torpor._lifecycle import CallGate
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
    CallGate.refuse_reentry()  # opening storage from inside an update function deadlocks
    from_registry = backend is None or isinstance(backend, str)
    resolved = resolve(backend if from_registry else None, config, options)  # type: ignore[arg-type]
    if not from_registry and any(k not in resolved.manager for k in options):
        extra = sorted(k for k in options if k not in resolved.manager)
        raise ConfigError(
            f"options {extra} are backend options; pass them to the backend object you built"
        )
    _check_clock(clock)
    # Everything that can fail without side effects comes before the backend is built.
    plugins = tuple(
        load_plugin(p) if isinstance(p, str) else p for p in resolved.manager["plugins"]
    )
    if from_registry:
        factory = load_backend_factory(resolved.backend)
        try:
            instance = factory(**resolved.backend_options)
        except TorporError:
            raise
        except TypeError as exc:
            raise ConfigError(f"backend {resolved.backend!r}: {exc}") from None
        name = resolved.backend
    else:
        instance = backend
        name = str(getattr(backend, "name", type(backend).__name__))
    return Manager(instance, name=name, options=resolved.manager, clock=clock, plugins=plugins)


def _check_clock(clock: object) -> None:
    """A clock returns whole milliseconds: refuse one that does not, at open."""
    if clock is None:
        return
    if not callable(clock):
        raise ConfigError(f"clock must be a callable returning ms, not {type(clock).__name__}")
    now = clock()
    if isinstance(now, bool) or not isinstance(now, int):
        raise ConfigError(
            f"clock() must return whole milliseconds as an int, not {type(now).__name__} "
            "(e.g. lambda: time.time_ns() // 1_000_000)"
        )


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
