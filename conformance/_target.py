"""What the kit tests: a backend, and how to build it over a given storage folder."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torpor
from torpor import load_backend_factory

__all__ = ["STORAGE", "Target"]

STORAGE = "{storage}"
"""Placeholder in an option value, replaced by the test's own fresh storage folder."""


@dataclass(frozen=True)
class Target:
    """A backend under test.

    Give ``backend`` (an entry-point name, or ``"package.module:factory"``) with
    ``options`` for the factory; ``{storage}`` in an option value becomes a fresh
    folder per test, and the *same* folder when a test reopens the backend.  Or give
    ``build``, a callable ``build(storage: Path) -> backend object``; tests that need a
    second process then skip, because a callable cannot be sent to one.

    ``deviations`` maps kit test names to the reason the backend is known to fail
    them.  They run as strict xfail: a fix that makes one pass is reported too.
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

    def make_backend(self, storage: Path) -> object:
        if self.build is not None:
            return self.build(storage)
        assert self.backend is not None
        options = {k: _substitute(v, storage) for k, v in self.options.items()}
        return resolve_factory(self.backend)(**options)

    def declared_deviations(self, backend: object) -> dict[str, str]:
        """The target's deviations plus those the backend object declares as data
        (an attribute ``conformance_deviations``: test name -> reason)."""
        merged = dict(getattr(backend, "conformance_deviations", {}) or {})
        merged.update(self.deviations)
        return merged

    def to_json(self) -> str:
        if not self.spawnable:
            raise torpor.UnsupportedOperation("a Target with build= cannot be sent to a process")
        return json.dumps({"backend": self.backend, "options": dict(self.options)})

    @classmethod
    def from_json(cls, text: str) -> Target:
        raw = json.loads(text)
        return cls(backend=raw["backend"], options=raw["options"])


def resolve_factory(ref: str) -> Callable[..., object]:
    """``"module:attr"`` imports the attribute; anything else is an entry-point name."""
    if ":" in ref:
        module, _, attr = ref.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj  # type: ignore[no-any-return]
    return load_backend_factory(ref)


def _substitute(value: object, storage: Path) -> object:
    if isinstance(value, str) and STORAGE in value:
        return value.replace(STORAGE, str(storage))
    return value
