"""Finding backends and extension plugins through entry points (docs/contract.md §11).

Backends register under ``torpor.backends`` as ``name = "module:factory"``;
``factory(**options)`` returns the backend object.  First-party backends register
exactly like third-party ones (see this project's pyproject.toml).

Loading is lazy and per plugin: opening ``lmdb`` imports nothing of ``redis``.  Only
listing every backend (``torpor backends``) loads them all, and a broken one then
gives a warning naming it instead of breaking the list.

Factory metadata
================

A factory may describe its backends statically, as two attributes, so that tools
(``torpor backends``, the conformance kit) learn what they need without building a
backend, touching storage or connecting to a server::

    def create_backend(**options): ...

    create_backend.capabilities = frozenset({Capability.PERSISTENT})
    create_backend.storage_options = {"path": "sessions"}

or, checked at import and typed, the decorator :func:`backend_factory`::

    @torpor.backend_factory(
        capabilities={Capability.PERSISTENT}, storage_options={"path": "sessions"}
    )
    def create_backend(**options): ...

``capabilities``
    an iterable of :class:`~torpor.Capability` (or their values, e.g.
    ``"persistent"``): what every backend the factory builds claims in
    ``torpor_capabilities``.  Leave it out if the claims depend on the options.
``storage_options``
    a mapping from each option that names a storage location (a folder or file that
    one store owns) to a default name, relative, for a fresh folder: the kit gives
    each test ``{storage}/<name>``.

:func:`describe_factory` reads and checks both; both are optional.
"""

from __future__ import annotations

import importlib.metadata as md
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torpor._capabilities import Capability
from torpor.errors import BackendNotFound, ConfigError, MissingDependency, TorporError

__all__ = [
    "BACKEND_GROUP",
    "PLUGIN_GROUP",
    "BackendInfo",
    "FactoryMetadata",
    "backend_factory",
    "describe_backends",
    "describe_factory",
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


CAPABILITIES_ATTRIBUTE = "capabilities"
STORAGE_OPTIONS_ATTRIBUTE = "storage_options"
VARIANTS_ATTRIBUTE = "capabilities_by_option"


@dataclass(frozen=True)
class FactoryMetadata:
    """What a backend factory declares about the backends it builds (see the module
    docstring), read without calling it.

    ``capabilities`` is ``None`` when the factory does not declare them (only an
    instance can then tell).  ``storage_options`` maps each option naming a storage
    location to its default name under a fresh folder (empty: none).  ``variants``
    holds the other sets a factory builds backends with, by option and value
    (mnesia_like: ``{"storage": {"ram": ...}}``): ``capabilities`` is then the set for
    the options given to :func:`describe_factory` (its defaults when none match).
    """

    capabilities: frozenset[Capability] | None
    storage_options: Mapping[str, str]
    variants: Mapping[str, Mapping[str, frozenset[Capability]]] = field(default_factory=dict)


def describe_factory(
    factory: Callable[..., Any],
    *,
    name: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> FactoryMetadata:
    """The static metadata of ``factory``: its ``capabilities``, ``storage_options``
    and ``capabilities_by_option`` attributes, checked.  The factory is never called.
    ``options``: the options a backend would be built with, which choose among the
    declared variants (``FactoryMetadata.variants``).

    A malformed declaration (an unknown capability, a storage option whose default is
    not a relative name) raises ``ConfigError`` naming the factory (``name``, else its
    module and qualified name).
    """
    label = name or _factory_label(factory)
    claims = getattr(factory, CAPABILITIES_ATTRIBUTE, None)
    capabilities = None if claims is None else _capabilities(claims, label)
    variants = _variants(getattr(factory, VARIANTS_ATTRIBUTE, None), label)
    for option, by_value in variants.items():
        chosen = by_value.get(str((options or {}).get(option)))
        if chosen is not None:
            capabilities = chosen
    return FactoryMetadata(capabilities, _storage_options(factory, label), variants)


def _capabilities(claims: object, label: str) -> frozenset[Capability]:
    if isinstance(claims, str | bytes) or not _iterable(claims):
        raise ConfigError(
            f"backend factory {label}: {CAPABILITIES_ATTRIBUTE} must be a collection of "
            f"torpor.Capability, not {type(claims).__name__}"
        )
    parsed = set()
    for claim in claims:  # type: ignore[attr-defined]
        if not isinstance(claim, str | Capability):
            raise ConfigError(
                f"backend factory {label}: {CAPABILITIES_ATTRIBUTE} holds "
                f"{type(claim).__name__} {claim!r}, not a torpor.Capability"
            )
        try:
            parsed.add(Capability.parse(claim))
        except ValueError as exc:
            raise ConfigError(f"backend factory {label} declares an {exc}") from None
    return frozenset(parsed)


def _variants(declared: object, label: str) -> dict[str, dict[str, frozenset[Capability]]]:
    """``{option: {value: capabilities}}``, checked."""
    if declared is None:
        return {}
    if not isinstance(declared, Mapping) or not all(
        isinstance(option, str) and isinstance(by_value, Mapping)
        for option, by_value in declared.items()
    ):
        raise ConfigError(
            f"backend factory {label}: {VARIANTS_ATTRIBUTE} must map an option name to "
            "{value: capabilities} (e.g. {'storage': {'ram': [...]}})"
        )
    return {
        option: {str(value): _capabilities(claims, label) for value, claims in by_value.items()}
        for option, by_value in declared.items()
    }


_F = TypeVar("_F", bound=Callable[..., Any])


def backend_factory(
    *,
    capabilities: Iterable[Capability | str] | None = None,
    storage_options: Mapping[str, str] | None = None,
    capabilities_by_option: Mapping[str, Mapping[str, Iterable[Capability | str]]] | None = None,
) -> Callable[[_F], _F]:
    """Decorator: declare a factory's metadata (sets the ``capabilities``,
    ``storage_options`` and ``capabilities_by_option`` attributes) and check it at
    once, so that a typo fails at import, with ``ConfigError``, rather than in a
    user's listing.  ``capabilities_by_option``: the claims of backends built with an
    option's other values (``{"storage": {"ram": [...]}}``)."""

    def declare(factory: _F) -> _F:
        if capabilities is not None:
            setattr(factory, CAPABILITIES_ATTRIBUTE, frozenset(capabilities))
        if storage_options is not None:
            setattr(factory, STORAGE_OPTIONS_ATTRIBUTE, dict(storage_options))
        if capabilities_by_option is not None:
            setattr(
                factory,
                VARIANTS_ATTRIBUTE,
                {
                    o: {v: frozenset(c) for v, c in by.items()}
                    for o, by in capabilities_by_option.items()
                },
            )
        describe_factory(factory)
        return factory

    return declare


def _storage_options(factory: object, label: str) -> dict[str, str]:
    declared = getattr(factory, STORAGE_OPTIONS_ATTRIBUTE, None)
    if declared is None:
        return {}
    if not isinstance(declared, Mapping):
        raise ConfigError(
            f"backend factory {label}: {STORAGE_OPTIONS_ATTRIBUTE} must map option names to "
            f"default names (e.g. {{'path': 'sessions'}}), not {type(declared).__name__}"
        )
    options: dict[str, str] = {}
    for option, default in declared.items():
        if not isinstance(option, str) or not option.isidentifier():
            raise ConfigError(
                f"backend factory {label}: storage option {option!r} is not an option name"
            )
        if (
            not isinstance(default, str)
            or not default
            or default.startswith(("/", "\\"))
            or ":" in default
            or any(part in ("", ".", "..") for part in default.replace("\\", "/").split("/"))
        ):
            raise ConfigError(
                f"backend factory {label}: the default of storage option {option!r} must be "
                f"a relative name such as 'sessions', not {default!r}"
            )
        options[option] = default
    return options


def _iterable(value: object) -> bool:
    try:
        iter(value)  # type: ignore[call-overload]
    except TypeError:
        return False
    return True


def _factory_label(factory: object) -> str:
    module = getattr(factory, "__module__", None)
    qualname = getattr(factory, "__qualname__", None) or type(factory).__qualname__
    return f"{module}:{qualname}" if module else str(qualname)
