"""The conformance kit proves it can fail: every broken backend is caught, by the
area that should catch it, and healthy backends pass the whole kit."""

from __future__ import annotations

import json
import re
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
    # No options: lmdb declares ``path`` as storage, so each test gets its own folder.
    code, matrix, output = run_kit("lmdb", tmp_path)
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


def _env_with_root(*more: str) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *more, env.get("PYTHONPATH", "")])
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


# -- running the kit as a plugin author would -----------------------------------------


def test_an_explicit_storage_form_still_works(tmp_path: Path) -> None:
    pytest.importorskip("lmdb")
    code, matrix, output = run_kit(
        "lmdb", tmp_path, "--torpor-area", "persistence", "--torpor-option", "path={storage}/env"
    )
    assert code == 0, output
    assert [row["passed"] for row in matrix["areas"]] == [3], output


def test_a_fixed_storage_option_is_refused_before_any_test_runs(tmp_path: Path) -> None:
    pytest.importorskip("lmdb")
    code, matrix, output = run_kit("lmdb", tmp_path, "--torpor-option", "path=/tmp/x")
    assert code == 4, output  # pytest's usage error
    assert matrix == {}, output  # nothing ran
    errors = [line for line in output.splitlines() if line.strip()]
    assert errors == [
        "ERROR: option 'path' names storage; each test needs its own: "
        'use --torpor-option "path={storage}/sessions"'
    ], output


def test_a_fixed_storage_option_in_a_target_stops_the_run_once(tmp_path: Path) -> None:
    pytest.importorskip("lmdb")
    proc = _user_suite(
        tmp_path,
        "Target(backend='lmdb', options={'path': '/tmp/x'})",
        "from torpor.conformance.suite import *  # noqa\n",
    )
    assert proc.returncode == 4, proc.stdout
    message = (
        "option 'path' names storage; each test needs its own: "
        "use Target(options={'path': '{storage}/sessions'})"
    )
    assert proc.stdout.count(message) == 1, proc.stdout
    assert "ERROR at setup" not in proc.stdout and "passed" not in proc.stdout, proc.stdout


def test_static_claims_that_differ_from_the_backends_are_refused(tmp_path: Path) -> None:
    (tmp_path / "claims_too_much.py").write_text(
        "from torpor.plugins.ets_like import create_backend as _ets_like\n"
        "def factory(**options):\n    return _ets_like(**options)\n"
        "factory.capabilities = {'native_iteration', 'persistent'}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(SUITE_DIR), "-p", "torpor.conformance.plugin",
         "-p", "no:cacheprovider", "--torpor-backend", "claims_too_much:factory", "-q",
         "--torpor-area", "ids"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env=_env_with_root(str(tmp_path)),
    )  # fmt: skip
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert (
        "claims_too_much:factory: the factory declares capabilities "
        "{native_iteration, persistent} but the backend claims "
        "{native_expiry, native_hibernation, native_iteration} in torpor_capabilities()"
    ) in proc.stdout, proc.stdout


def test_skips_and_their_reasons_are_in_the_matrix_and_the_report(tmp_path: Path) -> None:
    code, matrix, output = run_kit("ets_like", tmp_path, "--torpor-area", "persistence")
    assert code == 0, output
    (row,) = matrix["areas"]
    assert row["skipped"] == 3
    skipped = {s["test"]: s["reason"] for s in row["skipped_tests"]}
    assert skipped["test_reopen_keeps_sessions_and_their_state"] == (
        "missing: backend does not claim PERSISTENT"
    ), skipped
    assert len(skipped) == 3, skipped
    matrix_text = output[output.index("torpor conformance matrix") :]
    assert "SKIPPED (3):" in matrix_text, output
    assert re.search(
        r"persistence\s+test_reopen_keeps_sessions_and_their_state\s+"
        r"missing: backend does not claim PERSISTENT",
        matrix_text,
    ), output


def test_expect_raises_names_the_call_and_what_it_did_instead() -> None:
    import torpor
    from torpor.conformance import expect_raises, expect_returns

    with torpor.open(sweeper=False) as mgr:
        stale = mgr.create({"n": 1})
        with pytest.raises(AssertionError) as info:
            expect_raises(torpor.SessionNotFound, mgr.get, stale.id)
        assert str(info.value).startswith(f"Manager.get({stale.id!r}) returned Session("), info
        assert str(info.value).endswith("; expected it to raise SessionNotFound")
        mgr.delete(stale.id)
        # A wrong exception is named, and kept as the cause.
        with pytest.raises(AssertionError) as info:
            expect_raises(torpor.Conflict, mgr.save, stale, what="mgr.save(copy of a deleted one)")
        assert str(info.value).startswith(
            "mgr.save(copy of a deleted one) raised SessionNotFound: "
        ), info
        assert "expected it to raise Conflict" in str(info.value)
        assert isinstance(info.value.__cause__, torpor.SessionNotFound)
        # The right one is returned; match= checks its message.
        raised = expect_raises(torpor.SessionNotFound, mgr.save, stale)
        assert isinstance(raised, torpor.SessionNotFound)
        with pytest.raises(AssertionError, match="expected a message matching 'nope'"):
            expect_raises(torpor.SessionNotFound, mgr.save, stale, match="nope")
        assert expect_returns(False, mgr.delete, stale.id) is False
        with pytest.raises(AssertionError) as info:
            expect_returns(True, mgr.delete, stale.id, what="mgr.delete(twice)")
        assert str(info.value) == "mgr.delete(twice) returned False; expected True"
