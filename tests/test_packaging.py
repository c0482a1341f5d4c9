"""Packaging promises: a light import, typed, explicit public API."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest

import torpor

ROOT = Path(__file__).resolve().parent.parent


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


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from the working tree, as `pip wheel` (and so a user) builds it."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
    )
    (built,) = out.glob("torpor-*.whl")
    return built


def _metadata(wheel: Path) -> tuple[Message, list[str]]:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (path,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(zf.read(path).decode("utf-8")), names


def test_wheel_version_is_the_one_in_torpor_version(wheel: Path) -> None:
    meta, _names = _metadata(wheel)
    assert meta["Version"] == torpor.__version__
    assert wheel.name.startswith(f"torpor-{torpor.__version__}-")


def test_wheel_declares_the_license_as_an_spdx_expression_and_ships_the_file(
    wheel: Path,
) -> None:
    meta, names = _metadata(wheel)
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    # PEP 639: no legacy "License ::" classifier beside the expression.
    assert not [c for c in meta.get_all("Classifier", []) if c.startswith("License ::")]
    (shipped,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read(shipped).decode("utf-8")
    assert text == (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "MIT License" in text and "Copyright (c) 2026 The torpor developers" in text


def test_wheel_has_python_classifiers_and_project_urls(wheel: Path) -> None:
    meta, names = _metadata(wheel)
    classifiers = set(meta.get_all("Classifier", []))
    for minor in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {minor}" in classifiers
    assert "Typing :: Typed" in classifiers
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL", []))
    base = "https://github.com/torpor-sessions/torpor"
    assert urls["Homepage"] == base
    assert urls["Documentation"].startswith(f"{base}/") and "docs" in urls["Documentation"]
    assert urls["Changelog"].startswith(f"{base}/") and "CHANGELOG" in urls["Changelog"]
    assert urls["Issues"] == f"{base}/issues"
    # The public sample module and the typing marker ship in the wheel.
    assert "torpor/sample.py" in names and "torpor/py.typed" in names
