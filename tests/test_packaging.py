"""Packaging promises: a light import, typed, explicit public API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torpor


def test_import_torpor_pulls_in_no_optional_or_test_dependency() -> None:
    code = (
        "import sys, torpor\n"
        "heavy = ['pytest', '_pytest', 'hypothesis', 'lmdb', 'redis', 'sqlite_utils',"
        " 'sqlite3', 'click', 'rich', 'torpor.conformance.plugin', 'torpor.plugins.ets_like']\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_api_is_explicit_and_complete() -> None:
    exported = set(torpor.__all__)
    assert {
        "open",
        "Manager",
        "Session",
        "Capability",
        "Stats",
        "ManualClock",
        "Record",
    } <= exported
    for name in torpor.__all__:
        assert hasattr(torpor, name), name
    for error in (
        "InvalidSessionId", "SessionExists", "SessionNotFound", "Conflict", "SerializationError",
        "SessionTooLarge", "BackendNotFound", "MissingDependency", "ConfigError",
        "BackendUnavailable", "UnsupportedOperation", "ManagerClosed", "SessionCancelled",
    ):  # fmt: skip
        assert issubclass(getattr(torpor.errors, error), torpor.errors.TorporError)


def test_py_typed_ships() -> None:
    assert (Path(torpor.__file__).parent / "py.typed").is_file()


def test_no_pickle_anywhere() -> None:
    root = Path(__file__).resolve().parent.parent
    for folder in ("core", "plugins", "conformance"):
        for path in (root / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert "import pickle" not in text and "from pickle" not in text, path
