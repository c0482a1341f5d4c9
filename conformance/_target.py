"""What the kit tests: a backend, and how to build it over a given storage folder."""

from __future__ import annotations

import importlib
import json
import os
import secrets
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torpor
from torpor import FactoryMetadata, describe_factory, load_backend_factory

__all__ = ["STORAGE", "Target", "fixed_storage_message", "import_path", "shared_storage_name"]

STORAGE = "{storage}"
"""Placeholder in an option value, replaced by the test's own fresh storage folder (in
the distributed area: by a relative name, see :func:`shared_storage_name`)."""


@dataclass(frozen=True)
class Target:
    """A backend under test.

    Give ``backend`` (an entry-point name, or ``"package.module:factory"``) with
    ``options`` for the factory; ``{storage}`` in an option value becomes a fresh
    folder per test, and the *same* folder when a test reopens the backend.  Options
    the factory declares as storage locations (its ``storage_options`` metadata, see
    :func:`torpor.describe_factory`) default to ``{storage}/<declared name>``, so most
    backends need no options at all; a fixed value for one (no ``{storage}`` in it)
    is refused, because tests would share one store.  Or give
    ``build``, a callable ``build(storage: Path) -> backend object``; tests that need a
    second process then skip, because a callable cannot be sent to one.

    ``deviations`` maps kit test names to the reason the backend is known to fail
    them.  They run as strict xfail: a fix that makes one pass is reported too.

    The backend object may also offer ``conformance_plant(key: bytes, value: bytes)``,
    which writes a raw value into its storage as another program would; with it the
    kit checks that foreign and damaged data is skipped and counted (area
    ``damaged``), without it those tests skip.  It is a plain method, not a hook.

    In the ``distributed`` area (capability ``DISTRIBUTED``) every process gets the
    same options, but ``{storage}`` becomes a *relative* name (``kit-<hex>``) and each
    process runs in its own empty working directory, with its own ``HOME`` and
    ``TMPDIR``: processes on different hosts share nothing but their options, so the
    storage options of a distributed backend must name storage on its server (a
    namespace, a key prefix, a database), never a local path.
    """

    backend: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    build: Callable[[Path], object] | None = None
    deviations: Mapping[str, str] = field(default_factory=dict)
    name: str | None = None

    def __post_init__(self) -> None:
        if (self.backend is None) == (self.build is None):
            raise torpor.ConfigError("a conformance Target needs exactly one of backend= or build=")

    @property
    def label(self) -> str:
        return str(self.name or self.backend or getattr(self.build, "__qualname__", "backend"))

    @property
    def spawnable(self) -> bool:
        """Whether a child process can rebuild the backend from :meth:`to_json`."""
        return self.backend is not None

    def make_backend(self, storage: Path | str) -> object:
        """The backend, ``{storage}`` in option values replaced by ``storage``: a fresh
        folder, or a relative name (:func:`shared_storage_name`).  A ``build=`` callable
        gets it as a ``Path``."""
        if self.build is not None:
            return self.build(Path(storage))
        assert self.backend is not None
        factory = resolve_factory(self.backend)
        options = {**self._storage_defaults(factory), **self.options}
        return factory(**{k: _substitute(v, storage) for k, v in options.items()})

    def factory_metadata(self) -> FactoryMetadata | None:
        """The factory's static metadata (``None`` for a ``build=`` target); the
        factory is loaded, never called.  ``ConfigError`` if it is malformed."""
        if self.backend is None:
            return None
        return describe_factory(
            resolve_factory(self.backend), name=self.backend, options=self.options
        )

    def storage_options(self) -> dict[str, str]:
        """Each declared storage option and the value the kit gives it by default,
        ``{storage}/<declared name>``."""
        metadata = self.factory_metadata()
        if metadata is None:
            return {}
        return {option: f"{STORAGE}/{name}" for option, name in metadata.storage_options.items()}

    def fixed_storage(self) -> dict[str, str]:
        """Declared storage options given a value without ``{storage}`` (which would
        make every test share one store), each with the value to use instead."""
        defaults = self.storage_options()
        return {
            option: default
            for option, default in defaults.items()
            if option in self.options
            and not (isinstance(self.options[option], str) and STORAGE in self.options[option])
        }

    def _storage_defaults(self, factory: Callable[..., object]) -> dict[str, str]:
        declared = describe_factory(factory, name=self.backend).storage_options
        return {option: f"{STORAGE}/{name}" for option, name in declared.items()}

    def declared_deviations(self, backend: object) -> dict[str, str]:
        """The target's deviations plus those the backend object declares as data
        (an attribute ``conformance_deviations``: test name -> reason)."""
        merged = dict(getattr(backend, "conformance_deviations", {}) or {})
        merged.update(self.deviations)
        return merged

    def to_json(self) -> str:
        """The target for a child process, with this process's :func:`import_path`: a
        child may run in another working directory, and must still find a
        ``"package.module:factory"`` backend where this process found it."""
        if not self.spawnable:
            raise torpor.UnsupportedOperation("a Target with build= cannot be sent to a process")
        return json.dumps(
            {"backend": self.backend, "options": dict(self.options), "import_path": import_path()}
        )

    @classmethod
    def from_json(cls, text: str) -> Target:
        raw = json.loads(text)
        return cls(backend=raw["backend"], options=raw["options"])


def resolve_factory(ref: str) -> Callable[..., object]:
    """``"module:attr"`` imports the attribute; anything else is an entry-point name."""
    if ":" in ref:
        module, _, attr = ref.partition(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise torpor.BackendNotFound(
                f"cannot load the backend factory {ref!r}: {type(exc).__name__}: {exc}"
            ) from exc
        if not callable(obj):
            raise torpor.BackendNotFound(f"{ref!r} is not callable")
        return obj  # type: ignore[no-any-return]
    return load_backend_factory(ref)


def import_path() -> list[str]:
    """``sys.path`` as absolute folders (``""``, the working directory, included as
    one): what a child process appends to its own to import what this one can."""
    return [os.path.abspath(entry) for entry in sys.path]


def shared_storage_name() -> str:
    """A fresh relative storage name, ``kit-<hex>``, for the distributed area: it names
    the same store in every process only if the backend keeps its state on a server
    (``namespace="kit-1f2e.../sessions"``), and a different folder under each
    process's own working directory if it keeps it in local files."""
    return f"kit-{secrets.token_hex(8)}"


def fixed_storage_message(fixed: Mapping[str, str], flag: str | None) -> str:
    """The one line that refuses fixed storage options, showing the ``{storage}`` form
    for ``flag`` (``"--option"``, ``"--torpor-option"``, or ``None`` for ``Target``)."""
    names = ", ".join(repr(option) for option in fixed)
    verb = "names" if len(fixed) == 1 else "name"
    if flag is None:
        form = f"Target(options={dict(fixed)!r})"
    else:
        form = " ".join(f'{flag} "{option}={value}"' for option, value in fixed.items())
    plural = "option" if len(fixed) == 1 else "options"
    return f"{plural} {names} {verb} storage; each test needs its own: use {form}"


def _substitute(value: object, storage: Path | str) -> object:
    if isinstance(value, str) and STORAGE in value:
        return value.replace(STORAGE, str(storage))
    return value
