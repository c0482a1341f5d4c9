"""The conformance kit proves it can fail: every broken backend is caught, by the
area that should catch it, and healthy backends pass the whole kit.

The kit runs in this process (``pytester``, and the ``torpor conformance`` command
through click's runner), so the coverage of the project's tests counts the kit's
code.  The kit's own child processes (its multi-process tests) are not measured:
they run the backend code this process measures too.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.broken_backends import BROKEN, REFUSED
from torpor.conformance import SUITE_DIR

# pytester forgets the modules each in-process run imports.  These are imported once,
# here, so that every run shares them: a fresh copy of the LMDB plugin per run would
# keep its own registry of open environments, and its own fork hooks.
for _module in ("torpor.plugins.ets_like", "torpor.plugins.lmdb"):
    with contextlib.suppress(ImportError):  # lmdb: part of the test extra, optional here
        importlib.import_module(_module)

ROOT = Path(__file__).resolve().parent.parent

INNER = ("-p", "no:cacheprovider", "-o", "addopts=--strict-markers", "-o", "timeout=0")
"""For a pytest run inside this one: the project's addopts would start a second
coverage measurement (and stop this run's), and a per-test timeout would cancel the
outer test's.  Strict markers stay, as in a run of its own."""


@dataclass
class KitRun:
    code: int
    matrix: dict[str, Any]
    output: str


def run_kit(pytester: pytest.Pytester, backend: str, *extra: str) -> KitRun:
    """Run the kit's suite on ``backend`` in this process, from the project root (as
    ``python -m pytest conformance/suite -p torpor.conformance.plugin`` would)."""
    return run_pytest(
        pytester, str(SUITE_DIR), "-p", "torpor.conformance.plugin", f"--rootdir={ROOT}",
        "--torpor-backend", backend, "--torpor-report", str(pytester.path / "report.json"),
        *extra,
    )  # fmt: skip


def run_pytest(pytester: pytest.Pytester, *args: str) -> KitRun:
    """``pytest ARGS`` in this process; the matrix is read if the run wrote one."""
    report = pytester.path / "report.json"
    basetemp = pytester.path / "basetemp"  # never the outer run's, which it would prune
    result = pytester.runpytest_inprocess(*INNER, f"--basetemp={basetemp}", "-q", *args)
    matrix = json.loads(report.read_text()) if report.exists() else {}
    output = "\n".join([*result.outlines, *result.errlines])
    return KitRun(int(result.ret), matrix, output)


# Not measured: a broken backend runs the kit code the healthy runs below measure (no
# line is covered by these alone), and the tracer would double each run's time.
@pytest.mark.unmeasured
@pytest.mark.parametrize(("name", "area"), sorted(BROKEN.items()))
def test_kit_catches_the_broken_backend(name: str, area: str, pytester: pytest.Pytester) -> None:
    run = run_kit(pytester, f"tests.broken_backends:{name}", "--torpor-area", area)
    assert run.code == 1, run.output
    assert run.matrix["failing_areas"] == [area], run.output
    assert f"FAILING AREAS: {area}" in run.output
    # A child process that cannot import the backend would fail any spawning test.
    assert "cannot load the backend factory" not in run.output, run.output


@pytest.mark.parametrize(("name", "claim"), sorted(REFUSED.items()))
def test_kit_refuses_a_claim_it_cannot_test(
    name: str, claim: str, pytester: pytest.Pytester
) -> None:
    run = run_kit(pytester, f"tests.broken_backends:{name}")
    assert run.code == pytest.ExitCode.USAGE_ERROR, run.output
    assert run.matrix.get("areas") == [], run.output  # refused before any test ran
    refusal = rf"torpor conformance: tests\.broken_backends:{name}: .*{claim}"
    assert re.search(refusal, run.output), run.output


@pytest.mark.timeout(600)  # the whole kit, under coverage
@pytest.mark.parametrize(
    "backend",
    [
        "ets_like",
        "tests.minimal_backend:MinimalBackend",
        "tests.broken_backends:ExpiringMinimal",  # the base of the torpor_expire mistakes
        "tests.broken_backends:LockedTransactions",  # the base of the transaction mistakes
    ],
)
def test_healthy_backends_pass_the_whole_kit(backend: str, pytester: pytest.Pytester) -> None:
    run = run_kit(pytester, backend)
    assert run.code == 0, run.output
    statuses = {row["area"]: row["status"] for row in run.matrix["areas"]}
    assert "failing" not in statuses.values()
    assert statuses["persistence"] == "missing"
    if backend == "ets_like":
        assert statuses["iteration"] == statuses["hibernation"] == "native"
    else:
        assert statuses["iteration"] == statuses["hibernation"] == "fallback"
    if backend.endswith("ExpiringMinimal"):
        assert statuses["expiry"] == statuses["find"] == "native", statuses
    if backend.endswith("LockedTransactions"):
        assert statuses["transactions"] == statuses["find"] == "native", statuses


@pytest.mark.timeout(600)
def test_lmdb_passes_the_whole_kit_with_every_area_native(pytester: pytest.Pytester) -> None:
    pytest.importorskip("lmdb")
    # No options: lmdb declares ``path`` as storage, so each test gets its own folder.
    run = run_kit(pytester, "lmdb")
    assert run.code == 0, run.output
    statuses = {row["area"]: row["status"] for row in run.matrix["areas"]}
    # Its files are local to one host: it does not claim DISTRIBUTED, which has no
    # fallback; nor TRANSACTIONS (multi-session transactions: mnesia_like).
    assert statuses.pop("distributed") == "missing", statuses
    assert statuses.pop("transactions") == "missing", statuses
    assert set(statuses.values()) <= {"core", "native"}, statuses  # no fallback, no other gap
    (multiprocess,) = [row for row in run.matrix["areas"] if row["area"] == "multiprocess"]
    assert multiprocess["skipped"] == 0, run.output  # every one ran, in real processes
    assert multiprocess["passed"] >= len(_kit_tests("multiprocess")), run.output


@pytest.mark.timeout(900)
@pytest.mark.parametrize("storage", ["disc", "disc_only", "ram"])
def test_mnesia_like_passes_the_whole_kit_in_every_storage_mode(
    storage: str, pytester: pytest.Pytester
) -> None:
    # disc and disc_only: every area native (transactions included) but distributed,
    # which a local file cannot earn; ram: also without persistence and several
    # processes, which it does not claim (issue 11).
    run = run_kit(pytester, "mnesia_like", "--torpor-option", f"storage={storage}")
    assert run.code == 0, run.output
    statuses = {row["area"]: row["status"] for row in run.matrix["areas"]}
    missing = {"distributed"} | ({"persistence", "multiprocess"} if storage == "ram" else set())
    assert {a for a, s in statuses.items() if s == "missing"} == missing, statuses
    assert {s for a, s in statuses.items() if a not in missing} <= {"core", "native"}, statuses
    assert statuses["transactions"] == statuses["expiry"] == statuses["mailbox"] == "native"


def test_cli_exits_non_zero_and_names_the_area(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from torpor.cli import cli

    # The command runs pytest in this process: the same settings as run_pytest's.
    monkeypatch.setenv("PYTEST_ADDOPTS", " ".join([*INNER, f"--basetemp={tmp_path}"]))
    monkeypatch.chdir(ROOT)
    args = ["conformance", "tests.broken_backends:FoldsCase", "--area", "ids", "--area", "crud"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    # ids, and now crud too: a record keyed "STRASSE" naming "Straße" is damage.
    failing = next(line for line in result.output.splitlines() if "FAILING AREAS:" in line)
    assert "ids" in failing.split(":", 1)[1].replace(",", " ").split(), failing


def _user_suite(
    pytester: pytest.Pytester, target: str, module: str, *args: str, prelude: str = ""
) -> KitRun:
    """A plugin author's own test suite: a conftest with a ``torpor_target`` fixture
    (after ``prelude``, for what it imports) and a test module, run as its own project
    (no ini file)."""
    pytester.makeconftest(
        prelude + "import pytest\nfrom torpor.conformance import Target\n"
        "pytest_plugins = ['torpor.conformance.plugin']\n"
        f"@pytest.fixture(scope='session')\ndef torpor_target():\n    return {target}\n"
    )
    pytester.makepyfile(test_mine=module)
    return run_pytest(pytester, str(pytester.path), f"--rootdir={pytester.path}", *args)


def test_declared_deviations_are_strict_xfail(pytester: pytest.Pytester) -> None:
    run = _user_suite(
        pytester,
        "Target(backend='tests.broken_backends:FoldsCase', deviations={\n"
        "        'test_case_is_kept': 'keys are case-insensitive by design',\n"
        "        'test_nfc_and_nfd_are_distinct': 'claimed broken, but it is not',\n"
        "    })",
        "from torpor.conformance.suite import *  # noqa\n",
        "-k", "test_case_is_kept or test_nfc_and_nfd",
    )  # fmt: skip
    assert "1 xfailed" in run.output, run.output  # the declared, real deviation
    assert "XPASS(strict)" in run.output and "1 failed" in run.output, run.output


def test_overriding_a_kit_test_is_refused(pytester: pytest.Pytester) -> None:
    run = _user_suite(
        pytester,
        "Target(backend='ets_like')",
        "from torpor.conformance.suite import *  # noqa\n"
        "import pytest\n"
        "@pytest.mark.torpor_area('ids')\n"
        "def test_case_is_kept(kit):\n    pass\n",
    )
    assert run.code != 0
    assert "overrides the conformance test 'test_case_is_kept'" in run.output


def test_a_suite_that_drifted_to_fewer_tests_fails(pytester: pytest.Pytester) -> None:
    run = _user_suite(
        pytester,
        "Target(backend='ets_like')",
        "from torpor.conformance.suite import test_case_is_kept  # noqa\n",
    )
    assert run.code == 1, run.output
    assert "kit test(s) were not collected" in run.output


def test_a_deviation_naming_no_kit_test_is_an_error(pytester: pytest.Pytester) -> None:
    run = _user_suite(
        pytester,
        "Target(backend='ets_like', deviations={'test_that_does_not_exist': 'typo'})",
        "from torpor.conformance.suite import *  # noqa\n",
    )
    assert run.code != 0
    assert "deviations name no kit test: ['test_that_does_not_exist']" in run.output


def test_an_unknown_capability_name_is_an_error(pytester: pytest.Pytester) -> None:
    run = _user_suite(
        pytester,
        "Target(backend='ets_like')",
        "import pytest\n"
        "@pytest.mark.torpor_area('ids')\n"
        "@pytest.mark.torpor_requires('teleportation')\n"
        "def test_my_extra(kit):\n    pass\n",
    )
    assert run.code != 0
    assert "unknown capability 'teleportation'" in run.output


def test_every_kit_test_is_marked_with_its_area() -> None:
    from torpor.conformance import AREAS
    from torpor.conformance.suite import KIT_TESTS

    assert len(KIT_TESTS) >= 50  # 53 functions, 72 tests once parametrized
    for name, function in KIT_TESTS.items():
        areas = [m.args[0] for m in getattr(function, "pytestmark", []) if m.name == "torpor_area"]
        assert len(areas) == 1 and areas[0] in AREAS, name


# -- running the kit as a plugin author would -----------------------------------------


def test_an_explicit_storage_form_still_works(pytester: pytest.Pytester) -> None:
    pytest.importorskip("lmdb")
    run = run_kit(
        pytester, "lmdb", "--torpor-area", "persistence", "--torpor-option", "path={storage}/env"
    )
    assert run.code == 0, run.output
    assert [row["passed"] for row in run.matrix["areas"]] == [len(_kit_tests("persistence"))]


def test_a_fixed_storage_option_is_refused_before_any_test_runs(pytester: pytest.Pytester) -> None:
    pytest.importorskip("lmdb")
    run = run_kit(pytester, "lmdb", "--torpor-option", "path=/tmp/x")
    assert run.code == pytest.ExitCode.USAGE_ERROR, run.output
    assert run.matrix == {}, run.output  # nothing ran
    errors = [line for line in run.output.splitlines() if line.strip()]
    assert errors == [
        "ERROR: option 'path' names storage; each test needs its own: "
        'use --torpor-option "path={storage}/sessions"'
    ], run.output


def test_a_fixed_storage_option_in_a_target_stops_the_run_once(pytester: pytest.Pytester) -> None:
    pytest.importorskip("lmdb")
    run = _user_suite(
        pytester,
        "Target(backend='lmdb', options={'path': '/tmp/x'})",
        "from torpor.conformance.suite import *  # noqa\n",
    )
    assert run.code == pytest.ExitCode.USAGE_ERROR, run.output
    message = (
        "option 'path' names storage; each test needs its own: "
        "use Target(options={'path': '{storage}/sessions'})"
    )
    assert run.output.count(message) == 1, run.output
    assert "ERROR at setup" not in run.output and "passed" not in run.output, run.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--torpor-area", "nosuch"], "unknown --torpor-area ['nosuch']; areas: "),
        (["--torpor-option", "novalue"], "--torpor-option wants KEY=VALUE, not 'novalue'"),
        (["--torpor-option", "=x"], "--torpor-option wants KEY=VALUE, not '=x'"),
    ],
    ids=["unknown-area", "option-without-value", "option-without-key"],
)
def test_a_bad_kit_option_stops_the_run_with_one_line(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    run = run_kit(pytester, "ets_like", *args)
    assert run.code == pytest.ExitCode.USAGE_ERROR, run.output
    errors = [line for line in run.output.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"ERROR: {message}"), run.output


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        ("tests.no_such_module:factory", "cannot load the backend factory "
         "'tests.no_such_module:factory': ModuleNotFoundError"),
        ("tests.broken_backends:no_such_factory", "cannot load the backend factory "
         "'tests.broken_backends:no_such_factory': AttributeError"),
        ("tests.broken_backends:BROKEN", "'tests.broken_backends:BROKEN' is not callable"),
    ],
    ids=["no-module", "no-attribute", "not-callable"],
)  # fmt: skip
def test_a_backend_the_kit_cannot_load_is_one_line(
    pytester: pytest.Pytester, backend: str, message: str
) -> None:
    run = run_kit(pytester, backend)
    assert run.code == pytest.ExitCode.USAGE_ERROR, run.output
    errors = [line for line in run.output.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"ERROR: {message}"), run.output


def test_a_run_without_a_backend_says_how_to_name_one(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("pytest_plugins = ['torpor.conformance.plugin']\n")
    pytester.makepyfile(test_mine="from torpor.conformance.suite import *  # noqa\n")
    run = run_pytest(pytester, str(pytester.path), f"--rootdir={pytester.path}", "-k", "case_is")
    assert run.code != 0
    assert "the conformance kit needs a backend: pass --torpor-backend NAME" in run.output


def test_a_build_target_runs_the_kit_but_cannot_reach_a_process(pytester: pytest.Pytester) -> None:
    # build= is for a backend no entry point names: a callable, which a child process
    # cannot rebuild.  Reopening the same storage works; the multi-process tests skip.
    pytest.importorskip("lmdb")
    run = _user_suite(
        pytester,
        "Target(build=lambda storage: create_backend(path=str(storage / 'env')), name='mine')",
        "from torpor.conformance.suite import *  # noqa\n",
        "--torpor-area", "persistence", "--torpor-area", "multiprocess",
        "--torpor-report", str(pytester.path / "report.json"),
        prelude="from torpor.plugins.lmdb import create_backend\n",
    )  # fmt: skip
    assert run.code == 0, run.output
    rows = {row["area"]: row for row in run.matrix["areas"]}
    assert run.matrix["backend"] == "mine"
    assert rows["persistence"]["passed"] == len(_kit_tests("persistence")), run.output
    assert rows["multiprocess"]["passed"] == 0, run.output
    reasons = {s["reason"] for s in rows["multiprocess"]["skipped_tests"]}
    assert reasons == {"missing: the target is a build= callable, which cannot reach a process"}


def test_static_claims_that_differ_from_the_backends_are_refused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        claims_too_much="from torpor.plugins.ets_like import create_backend as _ets_like\n"
        "def factory(**options):\n    return _ets_like(**options)\n"
        "factory.capabilities = {'native_iteration', 'persistent'}\n"
    )
    pytester.syspathinsert()
    run = run_kit(pytester, "claims_too_much:factory", "--torpor-area", "ids")
    assert run.code == pytest.ExitCode.USAGE_ERROR, run.output
    assert (
        "claims_too_much:factory: the factory declares capabilities "
        "{native_iteration, persistent} but the backend claims "
        "{native_expiry, native_hibernation, native_iteration} in torpor_capabilities()"
    ) in run.output, run.output


def test_skips_and_their_reasons_are_in_the_matrix_and_the_report(
    pytester: pytest.Pytester,
) -> None:
    run = run_kit(pytester, "ets_like", "--torpor-area", "persistence")
    assert run.code == 0, run.output
    (row,) = run.matrix["areas"]
    skipped = {s["test"]: s["reason"] for s in row["skipped_tests"]}
    assert set(skipped) == _kit_tests("persistence"), skipped  # every one, with its reason
    assert row["skipped"] == len(skipped)
    assert skipped["test_reopen_keeps_sessions_and_their_state"] == (
        "missing: backend does not claim PERSISTENT"
    ), skipped
    assert all(r.startswith("missing: backend does not claim PERSISTENT") for r in skipped.values())
    matrix_text = run.output[run.output.index("torpor conformance matrix") :]
    assert f"SKIPPED ({len(skipped)}):" in matrix_text, run.output
    assert re.search(
        r"persistence\s+test_reopen_keeps_sessions_and_their_state\s+"
        r"missing: backend does not claim PERSISTENT",
        matrix_text,
    ), run.output


def _kit_tests(area: str) -> set[str]:
    """The names of the kit's tests in ``area``."""
    from torpor.conformance.suite import KIT_TESTS

    return {
        name
        for name, function in KIT_TESTS.items()
        if any(m.name == "torpor_area" and m.args[0] == area for m in function.pytestmark)  # type: ignore[attr-defined]
    }


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
