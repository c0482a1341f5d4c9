"""The conformance kit proves it can fail: every broken backend is caught, by the
area that should catch it, and healthy backends pass the whole kit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.broken_backends import BROKEN
from torpor.conformance import SUITE_DIR

ROOT = Path(__file__).resolve().parent.parent


def run_kit(backend: str, tmp_path: Path, *extra: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(SUITE_DIR), "-p", "torpor.conformance.plugin",
         "-p", "no:cacheprovider", "--torpor-backend", backend, "--torpor-report", str(report),
         "-q", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    matrix = json.loads(report.read_text()) if report.exists() else {}
    return proc.returncode, matrix, proc.stdout + proc.stderr


@pytest.mark.parametrize(("name", "area"), sorted(BROKEN.items()))
def test_kit_catches_the_broken_backend(name: str, area: str, tmp_path: Path) -> None:
    code, matrix, output = run_kit(f"tests.broken_backends:{name}", tmp_path, "--torpor-area", area)
    assert code == 1, output
    assert matrix["failing_areas"] == [area], output
    assert f"FAILING AREAS: {area}" in output


@pytest.mark.parametrize("backend", ["ets_like", "tests.minimal_backend:MinimalBackend"])
def test_healthy_backends_pass_the_whole_kit(backend: str, tmp_path: Path) -> None:
    code, matrix, output = run_kit(backend, tmp_path)
    assert code == 0, output
    statuses = {row["area"]: row["status"] for row in matrix["areas"]}
    assert "failing" not in statuses.values()
    assert statuses["persistence"] == "missing"
    if backend == "ets_like":
        assert statuses["iteration"] == statuses["hibernation"] == "native"
    else:
        assert statuses["iteration"] == statuses["hibernation"] == "fallback"


def test_lmdb_passes_the_whole_kit_with_every_area_native(tmp_path: Path) -> None:
    pytest.importorskip("lmdb")
    code, matrix, output = run_kit("lmdb", tmp_path, "--torpor-option", "path={storage}/env")
    assert code == 0, output
    statuses = {row["area"]: row["status"] for row in matrix["areas"]}
    assert set(statuses.values()) <= {"core", "native"}, statuses  # no fallback, nothing missing
    assert {row["area"]: row["passed"] for row in matrix["areas"]}["multiprocess"] == 3


def test_cli_exits_non_zero_and_names_the_area(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "torpor", "conformance", "tests.broken_backends:FoldsCase",
         "--area", "ids", "--area", "crud"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    # ids, and now crud too: a record keyed "STRASSE" naming "Straße" is damage.
    failing = next(line for line in proc.stdout.splitlines() if "FAILING AREAS:" in line)
    assert "ids" in failing.split(":", 1)[1].replace(",", " ").split(), failing


def test_declared_deviations_are_strict_xfail(tmp_path: Path) -> None:
    conftest = tmp_path / "conftest.py"
    conftest.write_text(
        "import pytest\n"
        "from torpor.conformance import Target\n"
        "pytest_plugins = ['torpor.conformance.plugin']\n"
        "@pytest.fixture(scope='session')\n"
        "def torpor_target():\n"
        "    return Target(backend='tests.broken_backends:FoldsCase', deviations={\n"
        "        'test_case_is_kept': 'keys are case-insensitive by design',\n"
        "        'test_nfc_and_nfd_are_distinct': 'claimed broken, but it is not',\n"
        "    })\n"
    )
    (tmp_path / "test_mine.py").write_text("from torpor.conformance.suite import *  # noqa\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(tmp_path), "-q", "-p", "no:cacheprovider",
         "-k", "test_case_is_kept or test_nfc_and_nfd", f"--rootdir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=_env_with_root(),
    )  # fmt: skip
    out = proc.stdout
    assert "1 xfailed" in out, out  # the declared, real deviation
    assert "XPASS(strict)" in out and "1 failed" in out, out  # a wrong claim is reported


def test_overriding_a_kit_test_is_refused(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "import pytest\nfrom torpor.conformance import Target\n"
        "pytest_plugins = ['torpor.conformance.plugin']\n"
        "@pytest.fixture(scope='session')\ndef torpor_target():\n"
        "    return Target(backend='ets_like')\n"
    )
    (tmp_path / "test_mine.py").write_text(
        "from torpor.conformance.suite import *  # noqa\n"
        "import pytest\n"
        "@pytest.mark.torpor_area('ids')\n"
        "def test_case_is_kept(kit):\n    pass\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(tmp_path), "-q", "-p", "no:cacheprovider",
         f"--rootdir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=_env_with_root(),
    )  # fmt: skip
    assert proc.returncode != 0
    assert "overrides the conformance test 'test_case_is_kept'" in proc.stdout + proc.stderr


def _env_with_root() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _user_suite(tmp_path: Path, target: str, module: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(
        "import pytest\nfrom torpor.conformance import Target\n"
        "pytest_plugins = ['torpor.conformance.plugin']\n"
        f"@pytest.fixture(scope='session')\ndef torpor_target():\n    return {target}\n"
    )
    (tmp_path / "test_mine.py").write_text(module)
    return subprocess.run(
        [sys.executable, "-m", "pytest", str(tmp_path), "-q", "-p", "no:cacheprovider",
         f"--rootdir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=_env_with_root(),
    )  # fmt: skip


def test_a_suite_that_drifted_to_fewer_tests_fails(tmp_path: Path) -> None:
    proc = _user_suite(
        tmp_path,
        "Target(backend='ets_like')",
        "from torpor.conformance.suite import test_case_is_kept  # noqa\n",
    )
    assert proc.returncode == 1, proc.stdout
    assert "kit test(s) were not collected" in proc.stdout


def test_a_deviation_naming_no_kit_test_is_an_error(tmp_path: Path) -> None:
    proc = _user_suite(
        tmp_path,
        "Target(backend='ets_like', deviations={'test_that_does_not_exist': 'typo'})",
        "from torpor.conformance.suite import *  # noqa\n",
    )
    assert proc.returncode != 0
    assert "deviations name no kit test: ['test_that_does_not_exist']" in proc.stdout


def test_an_unknown_capability_name_is_an_error(tmp_path: Path) -> None:
    proc = _user_suite(
        tmp_path,
        "Target(backend='ets_like')",
        "import pytest\n"
        "@pytest.mark.torpor_area('ids')\n"
        "@pytest.mark.torpor_requires('teleportation')\n"
        "def test_my_extra(kit):\n    pass\n",
    )
    assert proc.returncode != 0
    assert "unknown capability 'teleportation'" in proc.stdout + proc.stderr


def test_every_kit_test_is_marked_with_its_area() -> None:
    from torpor.conformance import AREAS
    from torpor.conformance.suite import KIT_TESTS

    assert len(KIT_TESTS) >= 50  # 53 functions, 72 tests once parametrized
    for name, function in KIT_TESTS.items():
        areas = [m.args[0] for m in getattr(function, "pytestmark", []) if m.name == "torpor_area"]
        assert len(areas) == 1 and areas[0] in AREAS, name
