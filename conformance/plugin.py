"""The conformance kit's pytest plugin.  Opt-in: ``pytest -p torpor.conformance.plugin``.

Options:

``--torpor-backend NAME``   the backend to test: an entry-point name or
                            ``package.module:factory``.  Without a path argument the
                            kit's own tests are collected.
``--torpor-option K=V``     a factory option (repeatable); ``{storage}`` in a value
                            becomes the test's own storage folder.  Options the
                            factory declares as storage (``storage_options``) need
                            none: each test gets ``{storage}/<declared name>``; a
                            fixed value for one is a usage error.
``--torpor-area AREA``      run only these areas (repeatable).
``--torpor-report PATH``    also write the capability matrix as JSON.
``--torpor-examples N``     hypothesis examples for the state machine (default
                            ``MODEL_EXAMPLES``, 25: a few seconds).

Instead of ``--torpor-backend`` a test suite may define a ``torpor_target`` fixture
returning a :class:`torpor.conformance.Target` and pull the tests in with
``from torpor.conformance.suite import *``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NoReturn

import pytest

from torpor import Capability, TorporError
from torpor.conformance import SUITE_DIR
from torpor.conformance._areas import AREAS
from torpor.conformance._kit import MODEL_EXAMPLES, Kit
from torpor.conformance._report import Matrix
from torpor.conformance._target import Target, fixed_storage_message

_MATRIX = pytest.StashKey[Matrix]()
_KIT_ITEMS = pytest.StashKey[dict[str, str]]()  # nodeid -> area
_TARGET = pytest.StashKey[Target]()  # from --torpor-backend, checked at configure


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("torpor", "torpor conformance kit")
    group.addoption("--torpor-backend", default=None, help="backend under test")
    group.addoption("--torpor-option", action="append", default=[], metavar="KEY=VALUE")
    group.addoption("--torpor-area", action="append", default=[], metavar="AREA")
    group.addoption("--torpor-report", default=None, metavar="PATH")
    group.addoption("--torpor-examples", type=int, default=MODEL_EXAMPLES, metavar="N")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "torpor_area(name): the conformance area of a test")
    config.addinivalue_line(
        "markers", "torpor_requires(*capabilities): skip as 'missing' unless all are claimed"
    )
    unknown = [a for a in config.getoption("torpor_area") if a not in AREAS]
    if unknown:
        raise pytest.UsageError(f"unknown --torpor-area {unknown}; areas: {', '.join(AREAS)}")
    backend = config.getoption("torpor_backend")
    if backend and config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args[:] = [str(SUITE_DIR)]
    config.stash[_MATRIX] = Matrix(backend or "(torpor_target fixture)")
    if backend:
        # Before any test runs: one clear line, not the same error in every test.
        config.stash[_TARGET] = _target_from_options(config)
    config.pluginmanager.register(_Recorder(config), "torpor-conformance-recorder")


def _target_from_options(config: pytest.Config) -> Target:
    backend = config.getoption("torpor_backend")
    options = {}
    for item in config.getoption("torpor_option"):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise pytest.UsageError(f"--torpor-option wants KEY=VALUE, not {item!r}")
        options[key.strip()] = value
    target = Target(backend=backend, options=options)
    try:
        fixed = target.fixed_storage()  # loads the factory (never calls it)
    except TorporError as exc:
        raise pytest.UsageError(str(exc)) from None
    if fixed:
        raise pytest.UsageError(fixed_storage_message(fixed, "--torpor-option"))
    return target


@pytest.fixture(scope="session")
def torpor_target(pytestconfig: pytest.Config) -> Target:
    """The backend under test.  Override this fixture to test your own backend."""
    target = pytestconfig.stash.get(_TARGET, None)
    if target is None:
        raise pytest.UsageError(
            "the conformance kit needs a backend: pass --torpor-backend NAME, or define a "
            "torpor_target fixture returning torpor.conformance.Target"
        )
    return target


def _refuse(message: str) -> NoReturn:
    """Stop the whole run with one message: a target the kit cannot test would
    otherwise give the same error in every test."""
    pytest.exit(f"torpor conformance: {message}", returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def torpor_profile(
    torpor_target: Target, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> dict[str, object]:
    """Opens the backend once: its capabilities and its declared deviations.

    Refuses (stopping the run) a fixed value for a declared storage option, and a
    factory whose static ``capabilities`` differ from what its backend claims."""
    import torpor
    from torpor.conformance.suite import KIT_TESTS

    try:
        metadata = torpor_target.factory_metadata()
        fixed = torpor_target.fixed_storage()
    except TorporError as exc:
        _refuse(str(exc))
    if fixed:
        _refuse(fixed_storage_message(fixed, None))
    backend = torpor_target.make_backend(tmp_path_factory.mktemp("probe"))
    deviations = torpor_target.declared_deviations(backend)
    unknown = sorted(set(deviations) - set(KIT_TESTS))
    try:
        with torpor.open(backend, sweeper=False) as mgr:
            capabilities = mgr.capabilities
    except TorporError as exc:
        # E.g. a claim the kit has no test for (DISTRIBUTED, TRANSACTIONS): the kit
        # must not pass a backend whose claims it cannot check (docs/contract.md §11).
        _refuse(f"{torpor_target.label}: {exc}")
    if unknown:
        _refuse(f"deviations name no kit test: {unknown}")
    declared = metadata.capabilities if metadata is not None else None
    if declared is not None and declared != capabilities:
        _refuse(_claims_differ(torpor_target.label, declared, capabilities))
    matrix = pytestconfig.stash[_MATRIX]
    matrix.capabilities = capabilities
    matrix.backend = torpor_target.label
    return {"capabilities": capabilities, "deviations": deviations}


def _claims_differ(
    label: str, declared: frozenset[Capability], claimed: frozenset[Capability]
) -> str:
    def names(capabilities: frozenset[Capability]) -> str:
        return "{" + ", ".join(sorted(c.value for c in capabilities)) + "}"

    return (
        f"{label}: the factory declares capabilities {names(declared)} but the backend "
        f"claims {names(claimed)} in torpor_capabilities(); make the factory's "
        "`capabilities` metadata match what its backends claim"
    )


@pytest.fixture
def kit(
    torpor_target: Target,
    torpor_profile: dict[str, object],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Kit]:
    """A :class:`Kit` over fresh storage; applies capability gates and deviations."""
    capabilities: frozenset[Capability] = torpor_profile["capabilities"]  # type: ignore[assignment]
    deviations: dict[str, str] = torpor_profile["deviations"]  # type: ignore[assignment]
    needed = {
        Capability.parse(c) for m in request.node.iter_markers("torpor_requires") for c in m.args
    }
    missing = sorted(c.name for c in needed if c not in capabilities)
    if missing:
        pytest.skip(f"missing: backend does not claim {', '.join(missing)}")
    name = request.node.originalname
    if name in deviations:
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=deviations[name]))
    storage = tmp_path / "storage"
    storage.mkdir()
    kit = Kit(torpor_target, storage)
    try:
        yield kit
    finally:
        kit.close_all()


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    from torpor.conformance.suite import KIT_TESTS

    areas_wanted = set(config.getoption("torpor_area"))
    kit_items: dict[str, str] = {}
    keep: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    for item in items:
        area_marker = item.get_closest_marker("torpor_area")
        if area_marker is None:
            keep.append(item)
            continue
        area = str(area_marker.args[0])
        if area not in AREAS:
            raise pytest.UsageError(f"{item.nodeid}: unknown torpor area {area!r}")
        for marker in item.iter_markers("torpor_requires"):
            for capability in marker.args:
                try:
                    Capability.parse(capability)
                except ValueError as exc:
                    raise pytest.UsageError(f"{item.nodeid}: {exc}") from None
        _refuse_overrides(item, KIT_TESTS)
        if areas_wanted and area not in areas_wanted:
            deselected.append(item)
            continue
        kit_items[item.nodeid] = area
        keep.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = keep
    config.stash[_KIT_ITEMS] = kit_items


def _refuse_overrides(item: pytest.Item, kit_tests: Mapping[str, object]) -> None:
    """A kit test must run as shipped: tailoring goes through declared deviations."""
    function = getattr(item, "function", None)
    name = getattr(item, "originalname", item.name)
    original = kit_tests.get(name)
    if function is None or original is None:
        return
    code, shipped = function.__code__, original.__code__  # type: ignore[attr-defined]
    if (code.co_filename, code.co_firstlineno) != (shipped.co_filename, shipped.co_firstlineno):
        raise pytest.UsageError(
            f"{item.nodeid} overrides the conformance test {name!r}; declare a deviation "
            "(Target(deviations={...})) instead of replacing the test"
        )


class _Recorder:
    """Files each kit test's outcome under its area, for the matrix."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        area = self._config.stash.get(_KIT_ITEMS, {}).get(report.nodeid)
        if area is None or not (report.when == "call" or not report.passed):
            return
        if hasattr(report, "wasxfail"):
            outcome = "failed" if report.passed else "xfailed"  # a strict xfail that passed
        elif report.failed:
            outcome = "failed"
        elif report.skipped:
            outcome = "skipped"
        else:
            outcome = "passed"
        reason = _skip_reason(report) if outcome == "skipped" else None
        self._config.stash[_MATRIX].record(area, outcome, report.nodeid, reason=reason)


def _skip_reason(report: pytest.TestReport) -> str:
    """The reason given to ``pytest.skip`` (or a skip marker), without pytest's
    ``Skipped:`` prefix."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from torpor.conformance.suite import KIT_TESTS

    config = session.config
    kit_items = config.stash.get(_KIT_ITEMS, {})
    if kit_items and not config.getoption("torpor_area") and not config.getoption("keyword"):
        collected = {nodeid.rsplit("::", 1)[-1].split("[", 1)[0] for nodeid in kit_items}
        absent = sorted(set(KIT_TESTS) - collected)
        if absent:
            config.stash[_MATRIX].failures.setdefault("kit", []).extend(absent)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    if not config.stash.get(_KIT_ITEMS, {}):
        return
    matrix = config.stash[_MATRIX]
    report = config.getoption("torpor_report")
    if report:
        matrix.write_json(Path(report))
    absent = matrix.failures.get("kit")
    if not matrix.counts and not absent:
        return  # stopped before any kit test ran (the reason is printed already)
    terminalreporter.write_sep("=", "torpor conformance")
    terminalreporter.write_line(matrix.render())
    if absent:
        terminalreporter.write_line(
            f"INCOMPLETE: {len(absent)} kit test(s) were not collected: {', '.join(absent[:5])}"
        )
